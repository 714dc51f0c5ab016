"""perfsuite: benchmarks and numerical parity of deep-learning inference, and a regression gate over saved runs.

Each subcommand lives in its own module under ``perfsuite/commands/`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a function taking the parsed
arguments and returning an exit code. Adding a command is adding a module.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from perfsuite import __version__
from perfsuite.config import load_suite_config
from perfsuite.errors import PerfsuiteError

# What a shell reports for a process that SIGPIPE ended (128 + 13): the output was not all delivered.
EXIT_BROKEN_PIPE = 141


#: the top-level ``--help``'s examples: a first hour with the suite
EXAMPLES = """\
examples:
  pytest benchmarks                          # the benchmarks (latency, model load, cold start) on this machine
  pytest benchmarks --benchmark-json run.json
  perfsuite doctor                           # what this machine has, which backends can run
  perfsuite predict fixtures/dog.jpg         # classify an image, timing each step
  perfsuite report run.json --output report/ # charts and a markdown summary
  perfsuite baseline record --runs 5         # a baseline for the regression gate, then later:
  perfsuite compare .perfsuite-baselines/<fingerprint> 'new-runs/*.json'

Each command's --help shows its options and examples (perfsuite COMMAND --help).
"""


def plain(text: str | None) -> str | None:
    """Help text without the docstrings' reStructuredText literal marks (``perfsuite`` -> perfsuite)."""
    return text.replace("``", "") if text else text


def _finish_help(parser: argparse.ArgumentParser, examples: str | None) -> None:
    """Plain descriptions and the examples at the end, for ``parser`` and each of its actions' parsers."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = plain(parser.description)
    if examples and not parser.epilog:
        parser.epilog = examples
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _finish_help(child, examples)


def build_parser() -> argparse.ArgumentParser:
    import perfsuite.commands

    parser = argparse.ArgumentParser(prog="perfsuite", description=__doc__.splitlines()[0], epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"perfsuite {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in sorted(pkgutil.iter_modules(perfsuite.commands.__path__), key=lambda m: m.name):
        if module.name.startswith("_"):  # shared helpers, not commands
            continue
        command = importlib.import_module(f"perfsuite.commands.{module.name}")
        before = set(subparsers.choices)
        command.register(subparsers)
        for name in set(subparsers.choices) - before:
            _finish_help(subparsers.choices[name], getattr(command, "EXAMPLES", None))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; user errors print one line and exit 2, never a traceback."""
    from perfsuite.fresh_process import skip_the_final_collection_at_exit

    skip_the_final_collection_at_exit()
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # here, so a closed pipe is caught below and not at interpreter exit
    except BrokenPipeError:
        # The reader went away (``perfsuite ... | head``): stop quietly. stdout now points at
        # /dev/null so that Python's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _run(argv: Sequence[str] | None) -> int:
    command = "perfsuite"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)  # --help and --version end here, before any file is read
        command = f"perfsuite {args.command}"
        load_suite_config()  # a broken [tool.perfsuite] stops every command now, naming the file and key
        return int(args.func(args) or 0)
    except PerfsuiteError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
