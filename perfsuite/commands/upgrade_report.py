"""``perfsuite upgrade-report OLD NEW``: one markdown page to read before approving an upgrade.

OLD and NEW are saved runs, in the forms ``perfsuite compare`` takes. The page lists the versions that
changed, the speed and memory verdicts of ``perfsuite compare``, and parity per backend x precision
against the goldens and in the runs. The golden check runs here, for NEW's model, backends and
precisions: run the command where NEW ran, or pass a ``perfsuite golden check --json`` report made
there with ``--golden-json``. Exit 0: nothing failed; 1: the gate or a golden check failed;
2: unusable input; 3: nothing failed but the gate is undecided (as ``perfsuite compare``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from perfsuite.commands._common import check_output_file, write_output
from perfsuite.commands._gate import add_settings_options, add_storage_option, settings_from_args
from perfsuite.config import split_names

#: shown at the end of ``--help``
EXAMPLES = """\
examples:
  perfsuite upgrade-report old-runs/ new-runs/ --output upgrade.md
  perfsuite upgrade-report old-runs/ new-runs/ --golden-json golden-check.json
"""

def register(subparsers) -> None:
    parser = subparsers.add_parser("upgrade-report", help="markdown page for reviewing an upgrade: versions, "
                                                          "speed and memory verdicts, parity against the goldens",
                                   description=__doc__.split("\n\n")[1])
    parser.add_argument("old", metavar="OLD", help="runs before the upgrade (paths, folder, 'glob', storage ids)")
    parser.add_argument("new", metavar="NEW", help="runs after the upgrade, same forms")
    parser.add_argument("--output", metavar="FILE", help="write the page to FILE (default: stdout)")
    parser.add_argument("--title", default="Upgrade report", help="the page's heading")
    add_storage_option(parser)
    parser.add_argument("--allow-hardware-mismatch", action="store_true",
                        help="report runs from different hardware (the page says so and lists every difference)")
    golden = parser.add_argument_group("parity against the goldens (default: run 'golden check' here for NEW's "
                                       "model, device, backends and precisions)")
    source = golden.add_mutually_exclusive_group()
    source.add_argument("--golden-json", metavar="PATH", type=Path,
                        help="use this 'perfsuite golden check --json' report (made where NEW ran) instead")
    source.add_argument("--no-golden", action="store_true", help="do not check against the goldens (the page "
                                                                 "says it was not checked)")
    golden.add_argument("--golden-backends", help="comma-separated (default: the backends of NEW's latency rows)")
    golden.add_argument("--golden-precisions", help="comma-separated (default: the precisions of NEW's rows)")
    golden.add_argument("--golden-dir", type=Path, default=None,
                        help="default: fixtures/golden in the project (as for golden check)")
    golden.add_argument("--tolerance", action="append", default=[], metavar="PRECISION:KEY=VALUE[,...]",
                        help="tolerance override for the golden check, as 'golden check --tolerance' (repeatable)")
    add_settings_options(parser)
    parser.set_defaults(func=run)


def _check_here(args: argparse.Namespace, new_runs):
    from perfsuite.commands.golden import check_against_golden
    from perfsuite.errors import InputError
    from perfsuite.golden import project_golden_dir
    from perfsuite.upgrade import GoldenParity, golden_check_options

    options = golden_check_options(new_runs)
    options["backends"] = split_names(args.golden_backends, "--golden-backends") or options["backends"]
    options["precisions"] = split_names(args.golden_precisions, "--golden-precisions") or options["precisions"]
    print(f"perfsuite upgrade-report: checking {', '.join(options['backends'])} x "
          f"{', '.join(options['precisions'])} on {options['device']} against the golden", file=sys.stderr)
    try:
        document = check_against_golden(**options, golden_dir=args.golden_dir or project_golden_dir(),
                                        tolerance_options=args.tolerance, log=lambda text: print(text, file=sys.stderr))
    except InputError as exc:
        raise InputError(f"golden check for NEW ({options['model_name']}, weights {options['weights']}, "
                        f"{options['device']}): {exc}. Run 'perfsuite golden check --json FILE' where NEW ran and "
                        "pass --golden-json FILE, or pass --no-golden") from exc
    return GoldenParity("checked now, in this environment", document)


def run(args: argparse.Namespace) -> int:
    from perfsuite.gate.runs import load_side
    from perfsuite.gate.verdict import compare_runs
    from perfsuite.upgrade import GoldenParity, build_report, read_golden_check, render_upgrade_report

    output = check_output_file(args.output, "--output") if args.output is not None else None
    settings = settings_from_args(args)
    old = load_side(args.old, args.storage, "OLD")
    new = load_side(args.new, args.storage, "NEW")
    gate = compare_runs(old, new, settings, allow_hardware_mismatch=args.allow_hardware_mismatch)
    if args.no_golden:
        golden = GoldenParity("not checked (--no-golden)")
    elif args.golden_json:
        golden = read_golden_check(args.golden_json)
    else:
        golden = _check_here(args, new)
    report = build_report(args.old, args.new, gate, golden)
    page = render_upgrade_report(report, args.title)
    if output is not None:
        write_output(output, "--output", page)
        print(f"perfsuite upgrade-report: {report.verdict}; wrote {output}")
    else:
        print(page, end="")
    return report.exit_code
