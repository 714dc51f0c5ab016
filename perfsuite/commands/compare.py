"""``perfsuite compare BASELINE NEW``: the regression gate over saved runs.

Each side is one or more whole runs: comma-separated paths, folders (a stored baseline is a
folder), quoted globs, or pytest-benchmark storage ids.

Exit status: 0 pass; 1 fail (a regression, a missing or failed benchmark, a memory regression or
a required backend without results); 2 unusable input (an unreadable file, runs of different
hardware without --allow-hardware-mismatch, rows run with a different configuration without
--allow-config-mismatch); 3 undecided: some row could not tell a change from noise (too few or
too noisy runs, most runs spoiled or in a slow host state; --inconclusive fail|pass to count it
otherwise). With one run a side nothing is called: there is no run-to-run spread to test against.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from perfsuite.commands._gate import add_settings_options, add_storage_option, settings_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="gate: compare saved runs against a baseline",
                                   description="\n\n".join(__doc__.split("\n\n")[1:]),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", metavar="BASELINE", help="baseline runs (paths, folder, 'glob', storage ids)")
    parser.add_argument("new", metavar="NEW", help="new runs, same forms")
    add_storage_option(parser)
    add_settings_options(parser)
    parser.add_argument("--allow-hardware-mismatch", action="store_true",
                        help="compare runs from different hardware (the report lists every difference)")
    parser.add_argument("--allow-config-mismatch", action="store_true",
                        help="compare rows run with a different model, weights, transform, precision, numeric "
                             "mode, TF32 or cudnn.benchmark setting or batch size (the report lists them)")
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
    result = compare_runs(baseline, new, settings, allow_hardware_mismatch=args.allow_hardware_mismatch,
                          allow_config_mismatch=args.allow_config_mismatch)
    print(render_result(result, markdown=args.format == "markdown"), end="")
    if args.summary:
        with open(args.summary, "a") as handle:
            handle.write(render_result(result, markdown=True) + "\n")
    if args.json:
        write_json_atomic(Path(args.json), json.loads(json.dumps(result.as_dict(), default=str)))
    return result.exit_code
