"""The ``fastpapers`` console entry point.

Each module in :mod:`fastpapers.commands` adds its own subcommand through ``register(sub)``,
so a paper brings its CLI without touching this file. Bad input exits with status 2 and a
one-line reason.
"""
import argparse
import importlib
import pkgutil
import sys

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastpapers",
        description="Seven classic deep-learning papers over fused PyTorch operators.")
    parser.add_argument("--version", action="version", version=f"fastpapers {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import commands
    for mod_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod_info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{mod_info.name}")
        mod.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, argparse's one-line usage error)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"fastpapers {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastpapers: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
