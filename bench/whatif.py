"""``python -m bench.whatif --patch NAME[,NAME] worker ...``: the real CLI with experimental
patches applied in memory, to measure a proposed change before anyone edits ``pushguard/``.

``make bench`` never uses it: it measures the code as it is. ``bench.run --patch``,
``bench.profile_worker --patch`` and ``bench.layers --patch`` do use it.

Patches:

- ``uvloop``: run the event loop on uvloop, which uvicorn[standard] already installs.
- ``inline_db``: every store call on the event loop's thread, waiting for locks there too.
- ``thread_db``: every store cycle on the DB thread (the worker before exchange_nowait).
- ``switch_fast``: a 0.5 ms GIL switch interval.

Patches that were measured here and have since landed in ``pushguard/`` were removed:
``claim_literal`` (literal ready-state condition, so the partial index is used),
``prefetch`` (claim ahead of the free slots) and ``raw_sqlite`` (claim and record through the
driver).
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def uvloop() -> None:
    import asyncio

    import uvloop as uv

    asyncio.set_event_loop_policy(uv.EventLoopPolicy())


def inline_db() -> None:
    """The worker's store calls on the event loop's own thread: no GIL handoffs between the
    loop and a DB thread (and no protection against a database that blocks)."""
    from typing import Any

    from pushguard import worker

    async def call(self: Any, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    worker.Worker._db_call = call  # type: ignore[method-assign]


def thread_db() -> None:
    """Every store cycle on the worker's DB thread, as before ``SQLStore.exchange_nowait``."""
    from typing import Any

    from pushguard.store.sql import SQLStore

    def never(self: Any, *args: Any) -> None:
        return None

    SQLStore.exchange_nowait = never  # type: ignore[method-assign,assignment]


def switch_fast() -> None:
    """A 0.5 ms GIL switch interval instead of 5 ms."""
    sys.setswitchinterval(0.0005)


PATCHES: dict[str, Callable[[], None]] = {"uvloop": uvloop, "inline_db": inline_db,
                                          "thread_db": thread_db, "switch_fast": switch_fast}


def main() -> None:
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "--patch":
        for name in filter(None, args[1].split(",")):
            PATCHES[name]()
        args = args[2:]
    from pushguard.cli import cli

    cli(args=args, prog_name="pushguard")


if __name__ == "__main__":
    main()
