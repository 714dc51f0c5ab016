"""``perfsuite compare BASELINE NEW``: the regression gate over saved runs.

Each side is one or more whole runs: comma-separated paths, folders (a stored baseline is a
folder), quoted globs, or pytest-benchmark storage ids.

Exit status: 0 pass; 1 fail (a regression, a missing or failed benchmark, a memory regression or
a required backend without results); 2 unusable input (an unreadable file, runs of different
hardware without --allow-hardware-mismatch, rows run with a different configuration without
--allow-config-mismatch); 3 undecided: some row could not tell a change from noise: it moved
beyond its threshold and the runs cannot call it (too few or too noisy runs, most runs spoiled;
--inconclusive fail|pass to count it otherwise). With one run a side nothing is called: there is
no run-to-run spread to test against.

Each latency row is judged on each of its figures: latency, and on CUDA also device time and host
time (docs/gate.md); it regresses when any figure does. Model-load and cold-start rows are shown
with their verdicts but do not decide the outcome ([tool.perfsuite.gate] informational).

Example: perfsuite compare .perfsuite-baselines/<id> 'runs/pr-*.json' --chart verdict.png
"""

from __future__ import annotations

import argparse
import json

from perfsuite.commands._common import check_output_file, write_output
from perfsuite.commands._gate import add_settings_options, add_storage_option, settings_from_args

#: shown at the end of ``--help``
EXAMPLES = """\
examples:
  perfsuite compare .perfsuite-baselines/<fingerprint> 'new-runs/*.json'
  perfsuite compare base1.json,base2.json,base3.json new1.json,new2.json,new3.json --json verdict.json
"""

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
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON (rows under \"rows\"; schema: "
                                                       "perfsuite.gate.result_schema)")
    parser.add_argument("--chart", metavar="PNG", help="also draw the verdict chart: each row's change with its 95%% "
                                                       "confidence interval, threshold band and MDE")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="every note on its own line (default: one line a row)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from perfsuite.gate.runs import check_comparable, load_side
    from perfsuite.gate.tables import render_result
    from perfsuite.gate.verdict import compare_runs

    # Output paths are checked before the work, and written before stdout (which may be a closed pipe).
    summary = check_output_file(args.summary, "--summary") if args.summary is not None else None
    json_file = check_output_file(args.json, "--json") if args.json is not None else None
    chart = check_output_file(args.chart, "--chart") if args.chart is not None else None
    settings = settings_from_args(args)
    baseline = load_side(args.baseline, args.storage, "BASELINE")
    new = load_side(args.new, args.storage, "NEW")
    check_comparable([*baseline, *new])
    result = compare_runs(baseline, new, settings, allow_hardware_mismatch=args.allow_hardware_mismatch,
                          allow_config_mismatch=args.allow_config_mismatch)
    if summary is not None:
        write_output(summary, "--summary", render_result(result, markdown=True) + "\n", append=True)
    if json_file is not None:
        write_output(json_file, "--json", json.dumps(result.as_dict(), default=str, indent=2, sort_keys=True))
    if chart is not None:
        from perfsuite.gate.chart import write_verdict_chart

        write_verdict_chart(result, chart, "--chart")
    print(render_result(result, markdown=args.format == "markdown", verbose=args.verbose), end="")
    return result.exit_code
