"""The ``perfsuite`` command.

Each subcommand lives in its own module under ``perfsuite/commands/`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a function taking the parsed
arguments and returning an exit code. Adding a command is adding a module.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from perfsuite import __version__
from perfsuite.errors import PerfsuiteError


def build_parser() -> argparse.ArgumentParser:
    import perfsuite.commands

    parser = argparse.ArgumentParser(prog="perfsuite", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"perfsuite {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in sorted(pkgutil.iter_modules(perfsuite.commands.__path__), key=lambda m: m.name):
        if module.name.startswith("_"):  # shared helpers, not commands
            continue
        importlib.import_module(f"perfsuite.commands.{module.name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PerfsuiteError as exc:
        print(f"perfsuite {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
