"""``python -m pushguard.sandbox``: the sandbox without the rest of the CLI."""

from __future__ import annotations

import argparse
import os

from pushguard.sandbox.server import run_forever


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m pushguard.sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="HTTP port; APNs +1, SMTP +2")
    parser.add_argument("--profile", help="fault profile, .json or .toml")
    parser.add_argument("--records", help="append every record to this JSONL file")
    parser.add_argument("--no-verify", action="store_true", help="accept unsigned webhooks")
    parser.add_argument(
        "--max-records", type=int, default=100_000, help="records kept in memory per service"
    )
    args = parser.parse_args(argv)
    run_forever(
        host=args.host,
        port=args.port,
        profile=args.profile,
        records=args.records,
        # A secret on the command line would end up in `ps` output, so it comes from the env.
        webhook_secret=os.environ.get("PUSHGUARD_SANDBOX_WEBHOOK_SECRET") or None,
        verify=not args.no_verify,
        max_records=args.max_records or None,
        echo=lambda line: print(line, flush=True),
    )


if __name__ == "__main__":
    main()
