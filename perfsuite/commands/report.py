"""``perfsuite report RESULTS... --output DIR``: charts and a markdown summary of saved runs.

RESULTS take the same forms as ``compare``'s sides (paths, folders, quoted globs, storage ids);
runs of different hardware are reported side by side (a cross-GPU report).
"""

from __future__ import annotations

import argparse

from perfsuite.commands._common import check_output_file, check_output_folder, write_output
from perfsuite.commands._gate import add_storage_option
from perfsuite.errors import InputError
from perfsuite.output import OutputError

#: shown at the end of ``--help``
EXAMPLES = """\
examples:
  perfsuite report run1.json run2.json --output report/
  perfsuite report '.benchmarks/*/*.json' --output report/ --summary "$GITHUB_STEP_SUMMARY"
"""

def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="PNG charts and a markdown summary of saved runs",
                                   description=__doc__.split("\n\n")[0].strip("`"))
    parser.add_argument("results", nargs="+", metavar="RESULTS", help="runs: paths, folders, 'globs', storage ids")
    parser.add_argument("--output", required=True, help="folder for the charts and the markdown summary")
    parser.add_argument("--title", default="Benchmark results", help="heading of the markdown summary")
    parser.add_argument("--markdown-name", default="summary.md",
                        help="file name of the markdown summary in --output (default summary.md)")
    parser.add_argument("--no-charts", action="store_true", help="only the markdown tables (docs/results)")
    parser.add_argument("--summary", metavar="FILE",
                        help="also append the markdown summary to FILE (e.g. \"$GITHUB_STEP_SUMMARY\")")
    add_storage_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from perfsuite.config import load_suite_config
    from perfsuite.gate.runs import load_side
    from perfsuite.gate.settings import settings_from_config
    from perfsuite.report import write_report

    output = check_output_folder(args.output, "--output")
    summary = check_output_file(args.summary, "--summary") if args.summary is not None else None
    runs = load_side(args.results, args.storage, "RESULTS")
    try:
        written = write_report(runs, output, args.title, charts=not args.no_charts, markdown_name=args.markdown_name,
                               host_contention=settings_from_config(load_suite_config()).host_contention)
    except OutputError:
        raise  # already names the file and what happened
    except OSError as exc:
        raise InputError(f"--output {output}: cannot write ({exc.strerror or exc})") from exc
    if summary is not None:
        write_output(summary, "--summary", written[-1].read_text() + "\n", append=True)
    for path in written:
        print(path)
    return 0
