"""`vitkit` entry point. Each module in SUBCOMMAND_MODULES exposes ``register(subparsers)``, adding its
subcommands with ``set_defaults(func=...)``; a func takes the parsed args and returns an exit code."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

SUBCOMMAND_MODULES = [
    "vitkit.cli.models",
    "vitkit.cli.train",
    "vitkit.cli.infer",
    "vitkit.cli.viz",
    "vitkit.cli.dense",
    "vitkit.cli.ssl",
    "vitkit.cli.bench",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitkit",
        description="Vision Transformers: train, pretrain, inspect and deploy. "
                    "Run `vitkit COMMAND --help` for the options of each command.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into `head` and closed early
        return 0
    except (ValueError, KeyError, FileNotFoundError, TypeError, ImportError) as e:
        # User errors: say what is wrong without a traceback (use -v to see one).
        if args.verbose:
            raise
        print(f"vitkit {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
