"""`vitkit` entry point. Each module in SUBCOMMAND_MODULES exposes ``register(subparsers)``, adding its
subcommands with ``set_defaults(func=...)``; a func takes the parsed args and returns an exit code."""

from __future__ import annotations

import argparse
import errno
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
    "vitkit.cli.export",
    "vitkit.cli.serve",
    "vitkit.cli.shards",
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
    """Run one command; return its exit code: 0 done, 1 the run failed (disk, lock, divergence), 2 a usage
    mistake (path, config value, option), 130 / 143 interrupted by SIGINT / SIGTERM (a checkpoint saved)."""
    try:
        parser = build_parser()  # imports torch and the commands' modules (seconds)
    except KeyboardInterrupt:
        print("vitkit: interrupted", file=sys.stderr)
        return 130
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
    except KeyboardInterrupt:
        print(f"vitkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        code = exit_code(e)
        if code is None or args.verbose:
            raise  # a bug, not a user mistake: the traceback is the report (-v shows one for any error)
        print(f"vitkit {args.command}: error: {one_line(e)}", file=sys.stderr)
        return code


def exit_code(e: BaseException) -> int | None:
    """2 for a mistake in what was asked, 1 for an environment failure, None for an unexpected error."""
    import yaml

    from ..errors import VitkitError

    if isinstance(e, VitkitError):
        return e.exit_code
    if isinstance(e, (ValueError, KeyError, TypeError, yaml.YAMLError, FileNotFoundError, NotADirectoryError,
                      IsADirectoryError, FileExistsError, ImportError)):
        return 2
    if isinstance(e, OSError):  # disk full, permission denied, read-only file system
        return 1
    return None


def one_line(e: BaseException) -> str:
    """The error's message without Python's decorations (KeyError quotes), on as few lines as it has."""
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
            text += "; free space or fix permissions there, then re-run (a resumed run continues)"
    return str(text) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
