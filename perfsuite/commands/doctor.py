"""``perfsuite doctor``: hardware, versions, and which backend x precision can run here and why not.

By default each backend's own static checks answer (installed packages, device and dtype support);
``--build`` goes further and builds and loads every runnable combination, so what only a real
attempt shows (ONNX Runtime's CPU provider has no bf16 convolution, TensorRT-RTX's runtime refuses
an H100's compute capability) appears too. Without ``--build`` a combination that passes the checks
is "not tried", never "ok": only a real attempt can say it runs. In ``--json`` each row's ``runs`` is
true (built and loaded), false (cannot run; ``reason`` says why) or null (not tried).
"""

from __future__ import annotations

import argparse
import json

from perfsuite.commands._common import add_model_options, load_model_reporting_warnings

NOT_TRIED = "not tried (static checks pass; --build tries it)"
#: machine facts that mean nothing without a GPU (the torch build's cuDNN, TF32, cudnn.benchmark)
GPU_ONLY_FACTS = ("cudnn", "tf32", "cudnn_benchmark")


#: shown at the end of ``--help``
EXAMPLES = """\
examples:
  perfsuite doctor                  # versions, GPU, and which backend x precision can run here
  perfsuite doctor --build          # also build and load each one (slow)
  perfsuite doctor --backends eager,onnxruntime --json
"""

def register(subparsers) -> None:
    parser = subparsers.add_parser("doctor", help="what this machine has and which backends can run")
    add_model_options(parser)
    parser.add_argument("--build", action="store_true",
                        help="also build and load every runnable backend x precision at batch 1 (slow: "
                             "torch.compile max-autotune takes minutes per precision on a GPU)")
    parser.add_argument("--backends", default=None, help="comma-separated subset of backends to report")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from perfsuite.backends import RunSpec, backend_names, get_runner_class
    from perfsuite.config import PRECISIONS, split_names
    from perfsuite.environment import cpu_flags, cpu_precision_problem, is_cuda, machine_summary, resolve_device
    from perfsuite.errors import BackendUnavailable

    device = resolve_device(args.device)
    names = split_names(args.backends, "--backends") or backend_names()
    runner_classes = {name: get_runner_class(name) for name in names}  # unknown names: a clear error first
    summary = machine_summary(device)
    model = None
    if args.build:
        model = load_model_reporting_warnings(args.model, args.weights)
    table = []
    for name, runner_class in runner_classes.items():
        for precision in PRECISIONS:
            spec = RunSpec(precision, 1, device)
            reason = runner_class.unavailable_reason(spec)
            facts = {}
            if reason is None and model is not None:
                runner = runner_class(model, spec)
                try:
                    runner.load()
                    facts = {k: v for k, v in runner.metrics().items() if v is not None}
                except BackendUnavailable as exc:
                    reason = str(exc)
                finally:
                    runner.release()
            # "runs": True only after a real build and load; without --build, passing the static checks
            # says nothing about what only an attempt shows (None: not tried).
            runs = False if reason else (True if model is not None else None)
            expected = runner_class.expected_skip(spec) if runs is None else None
            table.append({"backend": name, "precision": precision, "device": device, "runs": runs,
                          "reason": reason, "expected_skip": expected, **facts})
    if args.json:
        print(json.dumps({"machine": summary, "backends": table}, indent=2, default=str))
        return 0
    print("machine")
    if not is_cuda(device):
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        print("  GPU: none" + (f" in use (--device {device}; {gpus} visible)" if gpus else
                                f" (torch {torch.__version__} sees no CUDA GPU)"))
    for key, value in summary.items():
        if key in GPU_ONLY_FACTS and not is_cuda(device):
            continue
        built_for = " (what this torch build targets)" if key == "cuda" and value and not is_cuda(device) else ""
        print(f"  {key}: {value}{built_for}")
    print(f"\nbackends on {device}" + (" (built and loaded)" if args.build else
                                       " (installed packages and devices only; --build to build and load each)"))
    for row in table:
        state = {True: "ok (built and loaded)", None: NOT_TRIED}.get(row["runs"], f"cannot run: {row['reason']}")
        if row["expected_skip"]:
            state = f"skips: {row['expected_skip']} (--build confirms)"
        elif row["runs"] is not False and not is_cuda(device) and cpu_precision_problem(row["precision"], cpu_flags()):
            state += f"; slow here: {row['precision']} is not native on this CPU, the default run leaves it out"
        print(f"  {row['backend']:<36} {row['precision']:<5} {state}")
        facts = {k: row[k] for k in ("engine_bytes", "conversion_s", "build_s", "load_s", "engine_device_memory_bytes")
                 if row.get(k) is not None}
        if facts:
            print("      " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    return 0
