"""``python -m wsgate``: operator commands.

``python -m wsgate revoke USER --storage URL [--for SECONDS | --until TIME] [--jti JTI]``
revokes a user (or one of its tokens) in every worker that shares the storage, and prints what
it did. Exit codes: 0 done, 1 the storage could not be reached (nothing was revoked), 2 a
mistake in the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import datetime

from wsgate.exceptions import BackendUnavailable, ConfigurationError
from wsgate.revocation import DEFAULT_SECONDS, revoke

__all__ = ["main"]

EXIT_OK = 0
EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2  # argparse's own


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wsgate", description="wsgate commands.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser(
        "revoke",
        help="close a user's connections on every worker and refuse its handshakes for a while",
        description="Revoke USER (or only its token --jti) in every worker that shares the "
        "storage: its open connections close with 4003 revoked, and its handshakes are "
        "refused until the revocation ends. Exit codes: 0 done, 1 the storage could not be "
        "reached, 2 a mistake in the command line.",
    )
    command.add_argument("user", metavar="USER", help="the user's identity (the token's sub)")
    command.add_argument(
        "--storage",
        required=True,
        metavar="URL",
        help="the gate's storage, as WSGATE_STORAGE gives it (redis://host:6379/0)",
    )
    ends = command.add_mutually_exclusive_group()
    ends.add_argument(
        "--for",
        dest="for_seconds",
        type=float,
        metavar="SECONDS",
        help=f"how long the revocation lasts, in seconds (default: {DEFAULT_SECONDS:g})",
    )
    ends.add_argument(
        "--until",
        type=_moment,
        metavar="TIME",
        help="when the revocation ends, ISO 8601 with a zone (2026-12-03T18:00:00Z); for a "
        "token, its exp",
    )
    command.add_argument("--jti", help="revoke only the token with this jti claim")
    return parser


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time, such as 2026-12-03T18:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no zone: end it with Z or +HH:MM")
    return moment


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    try:
        done = asyncio.run(
            revoke(
                arguments.storage,
                arguments.user,
                jti=arguments.jti,
                until=arguments.until,
                for_seconds=arguments.for_seconds,
            )
        )
    except (ValueError, ConfigurationError) as exc:
        parser.error(str(exc))  # exits with 2
    except BackendUnavailable as exc:
        print(f"python -m wsgate revoke: nothing was revoked: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(done)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
