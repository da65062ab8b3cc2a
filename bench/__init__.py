"""``make bench``: pushguard end to end against a plain aiohttp loop, on this machine."""
