"""``perfsuite compare BASELINE NEW``: the regression gate over saved runs.

Each side is one or more whole runs: comma-separated paths, folders (a stored baseline is a
folder), quoted globs, or pytest-benchmark storage ids. Exit 0: pass; 1: a regression, a missing
or failed benchmark, or a required backend without results; 2: unusable input (unreadable file,
hardware mismatch without ``--allow-hardware-mismatch``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from perfsuite.commands._gate import add_settings_options, add_storage_option, settings_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="gate: compare saved runs against a baseline",
                                   description=__doc__.split("\n\n")[1])
    parser.add_argument("baseline", metavar="BASELINE", help="baseline runs (paths, folder, 'glob', storage ids)")
    parser.add_argument("new", metavar="NEW", help="new runs, same forms")
    add_storage_option(parser)
    add_settings_options(parser)
    parser.add_argument("--allow-hardware-mismatch", action="store_true",
                        help="compare runs from different hardware (the report lists every difference)")
    parser.add_argument("--format", choices=("plain", "markdown"), default="plain", help="stdout format")
    parser.add_argument("--summary", metavar="FILE",
                        help="also append the markdown report to FILE (e.g. \"$GITHUB_STEP_SUMMARY\")")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from perfsuite.gate.runs import load_side
    from perfsuite.gate.tables import render_result
    from perfsuite.gate.verdict import compare_runs
    from perfsuite.results import write_json_atomic

    settings = settings_from_args(args)
    baseline = load_side(args.baseline, args.storage, "BASELINE")
    new = load_side(args.new, args.storage, "NEW")
    result = compare_runs(baseline, new, settings, allow_hardware_mismatch=args.allow_hardware_mismatch)
    print(render_result(result, markdown=args.format == "markdown"), end="")
    if args.summary:
        with open(args.summary, "a") as handle:
            handle.write(render_result(result, markdown=True) + "\n")
    if args.json:
        write_json_atomic(Path(args.json), json.loads(json.dumps(result.as_dict(), default=str)))
    return result.exit_code
