"""Campaigns: segments, pre-flight checks, dry runs, test sends and resumable throttled sending
over the delivery engine."""
