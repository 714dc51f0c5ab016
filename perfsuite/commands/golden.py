"""``perfsuite golden record|check``: pin the reference outputs, and check every backend against them.

``record``  runs eager fp32 on the CPU over the fixture images and stores the logits with their
            provenance under the project's ``fixtures/golden/`` (the project: the folder of the nearest
            pyproject.toml at or above the working directory; ``--golden-dir`` to choose). Replacing an
            existing golden needs
            ``--overwrite``; either way it prints what changed against the previous one.
``check``   loads the golden of the model's weights fingerprint (failing clearly when there is
            none), checks that the reference itself has not moved, then runs every available
            backend x precision on the same images and judges each against the golden with its
            precision's tolerance. Exit status 0: all passed; 1: something failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from perfsuite.commands._common import (
    add_model_options,
    check_output_file,
    check_output_folder,
    load_model_reporting_warnings,
    write_output,
)
from perfsuite.config import split_names

#: shown at the end of ``--help``
EXAMPLES = """\
examples:
  perfsuite golden record --weights pretrained
  perfsuite golden check --backends eager,onnxruntime --precisions fp32
"""

def register(subparsers) -> None:
    parser = subparsers.add_parser("golden", help="record or check the golden reference outputs")
    actions = parser.add_subparsers(dest="golden_action", metavar="ACTION", required=True)

    record = actions.add_parser("record", help="record the reference logits (eager fp32, CPU) as a golden")
    add_model_options(record)
    _add_golden_dir(record)
    record.add_argument("--overwrite", action="store_true",
                        help="replace an existing golden of the same weights and transform (deliberately)")
    record.set_defaults(func=run_record)

    check = actions.add_parser("check", help="check the reference and every backend x precision against the golden")
    add_model_options(check)
    _add_golden_dir(check)
    check.add_argument("--backends", default=None, help="comma-separated (default: every registered backend)")
    check.add_argument("--precisions", default=None, help="comma-separated (default: fp32,fp16,bf16)")
    check.add_argument("--tolerance", action="append", default=[], metavar="PRECISION:KEY=VALUE[,...]",
                       help="override a tolerance, e.g. fp16:rel=0.02,min_cosine=0.9995 (repeatable; wins over "
                            "[tool.perfsuite.tolerances])")
    check.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    check.set_defaults(func=run_check)


def _add_golden_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--golden-dir", type=Path, default=None,
                        help="default: fixtures/golden in the project (the folder of the nearest pyproject.toml at "
                             "or above the working directory)")


def run_record(args: argparse.Namespace) -> int:
    from perfsuite.errors import InputError
    from perfsuite.golden import (
        GoldenError,
        compare_goldens,
        golden_inputs,
        golden_path,
        load_golden,
        project_golden_dir,
        record_golden,
        recorded_goldens,
        save_golden,
    )
    from perfsuite.tolerances import tolerance_for

    if args.device not in ("auto", "cpu"):
        raise InputError(f"--device {args.device}: goldens are recorded on the CPU by definition (eager fp32 "
                         "there has no TF32); check other devices with 'perfsuite golden check'")
    golden_dir = check_output_folder(args.golden_dir or project_golden_dir(), "--golden-dir")
    model = load_model_reporting_warnings(args.model, args.weights)
    new = record_golden(model, golden_inputs(args.transform))
    path = golden_path(model.name, model.fingerprint, args.transform, golden_dir)
    print(f"recorded now: {new.describe()}")
    existed = path.exists()
    if existed:
        try:
            old = load_golden(path)
        except GoldenError as exc:
            print(f"the existing golden is unusable: {exc}")
        else:
            comparison = compare_goldens(old, new, tolerance_for("fp32"), model.categories)
            exact = bool((old.logits == new.logits).all()) if old.logits.shape == new.logits.shape else False
            print("changes against the existing golden:")
            print("\n".join(f"  {line}" for line in comparison.report().splitlines()))
            print("  logits: " + ("bit-identical" if exact else
                                  f"moved, max relative error {comparison.parity.outputs[0].max_scaled_error:.3g} "
                                  "(max |Δ| / max |reference|)"))
        if not args.overwrite:
            print(f"\nnot replaced: {path} exists. Re-recording is deliberate: pass --overwrite, then commit the "
                  "file with a note on why the reference moved.", file=sys.stderr)
            return 1
    else:
        others = recorded_goldens(model.name, golden_dir)
        if others:
            print("other goldens of this model (kept):\n" + "\n".join(f"  {line}" for line in others))
    saved = save_golden(new, golden_dir)
    print(f"{'replaced' if existed else 'wrote'} {saved}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    import json

    from perfsuite.golden import project_golden_dir

    output = check_output_file(args.json, "--json") if args.json is not None else None
    document = check_against_golden(args.model, args.weights, args.transform, args.golden_dir or project_golden_dir(),
                                    args.device, split_names(args.backends, "--backends"),
                                    split_names(args.precisions, "--precisions"), args.tolerance)
    if output is not None:
        write_output(output, "--json", json.dumps(document, indent=2, sort_keys=True))
    return 1 if document["counts"]["failed"] else 0


def check_against_golden(model_name: str | None, weights: str | None, transform: str, golden_dir: Path,
                         device: str = "auto", backends: Sequence[str] = (), precisions: Sequence[str] = (),
                         tolerance_options: Sequence[str] = (),
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """What ``golden check`` does, printing through ``log``; returns the document ``--json`` writes:
    ``golden``, ``model``, ``transform``, ``device``, ``machine_info`` (``{"perfsuite": ...}`` as saved
    runs have it, so the environment the check ran in can be compared with a run's), ``results`` (one
    row per backend x precision, the reference first) and ``counts``."""
    from perfsuite.backends import RunSpec, backend_names, get_runner_class
    from perfsuite.comparator import ParityReport
    from perfsuite.config import PRECISIONS, check_precision, load_suite_config
    from perfsuite.environment import resolve_device, tf32_in_effect
    from perfsuite.errors import BackendUnavailable
    from perfsuite.gate.hardware import machine_section
    from perfsuite.golden import check_reference, compare_with_golden, find_golden
    from perfsuite.results import clean_json
    from perfsuite.tolerances import merge_overrides, parse_tolerance_options, tolerance_for

    device = resolve_device(device)
    backends = list(backends) or backend_names()
    runner_classes = {name: get_runner_class(name) for name in backends}  # unknown names: a clear error
    precisions = [check_precision(p, "--precisions") for p in precisions] or list(PRECISIONS)
    overrides = merge_overrides(load_suite_config().extra.get("tolerances"), parse_tolerance_options(tolerance_options))

    model = load_model_reporting_warnings(model_name, weights)
    golden = find_golden(model, transform, golden_dir)
    reference, inputs = check_reference(model, golden, tolerance_for("fp32", overrides=overrides))
    log(reference.report())
    rows: list[dict] = [{"backend": "reference", "precision": "fp32", "device": "cpu",
                         "outcome": "passed" if reference.passed else "failed",
                         "parity": reference.parity.as_dict(), "changes": list(reference.changes)}]

    log(f"\nbackends on {device} against the golden:")
    for backend, runner_class in runner_classes.items():
        for precision in precisions:
            spec = RunSpec(precision, inputs.batch.shape[0], device)
            row = {"backend": backend, "precision": precision, "device": device}
            reason = runner_class.unavailable_reason(spec)
            parity: ParityReport | None = None
            if reason is None:
                runner = runner_class(model, spec)
                try:
                    outputs = runner.run(inputs.batch)
                except BackendUnavailable as exc:
                    reason = str(exc)
                else:
                    tolerance = tolerance_for(precision, tf32_in_effect(device), overrides)
                    parity = compare_with_golden(golden, outputs, tolerance, model.categories)
                finally:
                    runner.release()
            label = f"  {backend:<15}{precision:<6}"
            if parity is None:
                log(f"{label}SKIP  {reason}")
                rows.append({**row, "outcome": "skipped", "reason": reason})
                continue
            log(f"{label}{'PASS' if parity.passed else 'FAIL'}  " + parity.outputs[0].summary().split(": ", 1)[1])
            if not parity.passed:
                log("\n".join(f"      {line}" for line in parity.report().splitlines()[1:]))
            rows.append({**row, "outcome": "passed" if parity.passed else "failed", "parity": parity.as_dict()})

    counts = {outcome: sum(r["outcome"] == outcome for r in rows) for outcome in ("passed", "failed", "skipped")}
    log(f"\n{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
        "(the reference counts as one)")
    return clean_json({"golden": str(golden.path), "model": model.describe(), "transform": golden.transform,
                       "device": device, "machine_info": {"perfsuite": machine_section(device)}, "results": rows,
                       "counts": counts})
