"""``perfsuite baseline``: record, store, find and list baselines (one per hardware fingerprint)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from perfsuite.commands._gate import add_storage_option, baseline_dir

#: shown at the end of ``--help``
EXAMPLES = """\
examples:
  perfsuite baseline record --runs 5            # run `pytest benchmarks` 5 times, store as this machine's baseline
  perfsuite baseline record --runs 5 --output new-runs -- --backends eager
  perfsuite baseline save .benchmarks/Linux-CPython-3.11-64bit/0001_*.json
  perfsuite baseline fingerprint --json
  perfsuite baseline list
"""

def register(subparsers) -> None:
    parser = subparsers.add_parser("baseline", help="record and store baselines per hardware fingerprint")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    record = actions.add_parser("record", help="run the benchmarks N times and store them as this hardware's "
                                               "baseline (or write them to --output)")
    record.add_argument("--runs", type=int, default=5,
                        help="whole runs to record (default 5: what the H200 drill needed to catch +5%% at batch "
                             ">= 64; 3+ give the gate a run-to-run spread)")
    where = record.add_mutually_exclusive_group()
    where.add_argument("--store", help="baseline store (default: [tool.perfsuite.gate] baseline_dir or "
                                       ".perfsuite-baselines)")
    where.add_argument("--output", help="write run-NN.json here instead of storing a baseline (e.g. the new "
                                        "side of a comparison)")
    record.add_argument("--allow-failures", action="store_true",
                        help="store a baseline even if a run had failing tests")
    record.add_argument("pytest_args", nargs=argparse.REMAINDER,
                        help="after --: pytest arguments (default target: benchmarks/)")
    record.set_defaults(func=run_record)

    save = actions.add_parser("save", help="store existing runs as the baseline of their hardware")
    save.add_argument("runs", nargs="+", help="runs: paths, folders, 'globs' or storage ids")
    save.add_argument("--store", help="baseline store (default: .perfsuite-baselines)")
    save.add_argument("--allow-failures", action="store_true",
                      help="store runs that recorded failing tests (a run without any latency row is never stored)")
    add_storage_option(save)
    save.set_defaults(func=run_save)

    fingerprint = actions.add_parser("fingerprint", help="this machine's hardware fingerprint id (a cache key)")
    fingerprint.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    fingerprint.add_argument("--json", action="store_true", help="every field, as JSON")
    fingerprint.set_defaults(func=run_fingerprint)

    listing = actions.add_parser("list", help="stored baselines")
    listing.add_argument("--store", help="baseline store (default: .perfsuite-baselines)")
    listing.set_defaults(func=run_list)


def run_record(args: argparse.Namespace) -> int:
    from perfsuite.gate.record import RecordInterrupted, record_runs
    from perfsuite.gate.runs import load_run
    from perfsuite.gate.store import recording_folder, save_baseline

    try:
        if args.output:
            recorded = record_runs(args.runs, Path(args.output), args.pytest_args)
            _note_physical_gpus([load_run(r.path) for r in recorded], "new")
            failed = [r for r in recorded if r.exit_code != 0]
            print(f"perfsuite baseline record: {len(recorded)} runs in {args.output}"
                  + (f"; {len(failed)} had failing tests (compare will report them)" if failed else ""))
            return 0
        root = Path(baseline_dir(args))
        with recording_folder(root) as folder:
            recorded = record_runs(args.runs, folder, args.pytest_args)
            failed = [r for r in recorded if r.exit_code != 0]
            if failed and not args.allow_failures:
                print(f"perfsuite baseline record: {len(failed)} of {len(recorded)} runs had failing tests; baseline "
                      "not stored (--allow-failures stores it anyway)", file=sys.stderr)
                return 1
            runs = [load_run(r.path) for r in recorded]
            stored = save_baseline(root, runs)
            _note_physical_gpus(runs, "baseline")
    except RecordInterrupted as exc:
        print(f"perfsuite baseline record: {exc}", file=sys.stderr)
        return 128 + exc.signum
    print(f"perfsuite baseline record: {len(recorded)} runs stored in {stored}")
    return 0


def run_save(args: argparse.Namespace) -> int:
    from perfsuite.gate.runs import check_comparable, check_storable, load_side
    from perfsuite.gate.store import save_baseline

    runs = load_side(args.runs, args.storage, "runs")
    check_comparable(runs)  # consistent with each other
    for run in runs:
        check_storable(run, allow_failures=args.allow_failures)
    stored = save_baseline(baseline_dir(args), runs)
    _note_physical_gpus(runs, "baseline")
    print(f"perfsuite baseline save: {len(runs)} runs stored in {stored}")
    return 0


def _note_physical_gpus(runs, side: str) -> None:
    """Say when the runs came from several physical GPUs of their model (one fingerprint, several cards)."""
    from perfsuite.gate.hardware import physical_gpu_notes

    named = [(run.path.name, run.machine_info) for run in runs]
    for note in physical_gpu_notes(named, []) if side == "baseline" else physical_gpu_notes([], named):
        print(f"perfsuite baseline: note: {note}", file=sys.stderr)


def run_fingerprint(args: argparse.Namespace) -> int:
    from perfsuite.environment import resolve_device
    from perfsuite.gate.hardware import current_fingerprint

    fingerprint = current_fingerprint(resolve_device(args.device))
    if args.json:
        print(json.dumps({"id": fingerprint.id, "label": fingerprint.label, "kind": fingerprint.kind,
                          **fingerprint.as_dict()}, indent=2))
    else:
        print(fingerprint.id)
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Every folder of the store, verified; exit 2 when one is not a usable baseline (each says why)."""
    from perfsuite.errors import InputError
    from perfsuite.gate.store import list_baselines

    root = Path(baseline_dir(args))
    if root.exists() and not root.is_dir():
        raise InputError(f"--store {root}: is a file, not a baseline store (a folder)")
    entries = list_baselines(root)
    for entry in entries:
        if entry.manifest is not None:
            manifest = entry.manifest
            print(f"{manifest['fingerprint_id']}  {len(manifest['runs'])} runs  {manifest.get('created')}  "
                  f"{manifest.get('label')}  (verified)")
    problems = [entry for entry in entries if entry.problem]
    for entry in problems:
        print(f"not a usable baseline: {entry.problem}", file=sys.stderr)
    if not entries:
        state = "" if root.is_dir() else " (not a folder)" if root.exists() else " (the folder does not exist)"
        print(f"no baselines under {root}{state}")
    return 2 if problems else 0
