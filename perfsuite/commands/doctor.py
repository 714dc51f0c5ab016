"""``perfsuite doctor``: hardware, versions, and which backend x precision can run here and why not.

By default each backend's own static checks answer (installed packages, device and dtype support);
``--build`` goes further and builds and loads every runnable combination, so what only a real
attempt shows (ONNX Runtime's CPU provider has no bf16 convolution, TensorRT-RTX's runtime refuses
an H100's compute capability) appears too.
"""

from __future__ import annotations

import argparse
import json
import warnings

from perfsuite.commands._common import add_model_options


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
    from perfsuite.backends import RunSpec, backend_names, get_runner_class
    from perfsuite.config import PRECISIONS
    from perfsuite.environment import machine_summary, resolve_device
    from perfsuite.errors import BackendUnavailable
    from perfsuite.models import load_model, resolve_weights_choice

    device = resolve_device(args.device)
    summary = machine_summary(device)
    model = None
    if args.build:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_model(args.model, resolve_weights_choice(args.weights))
    table = []
    names = [n.strip() for n in args.backends.split(",")] if args.backends else backend_names()
    for name in names:
        runner_class = get_runner_class(name)
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
            table.append({"backend": name, "precision": precision, "device": device,
                          "runs": reason is None, "reason": reason, **facts})
    if args.json:
        print(json.dumps({"machine": summary, "backends": table}, indent=2, default=str))
        return 0
    print("machine")
    for key, value in summary.items():
        print(f"  {key}: {value}")
    print(f"\nbackends on {device}" + (" (built and loaded)" if args.build else
                                       " (installed packages and devices only; --build to build and load each)"))
    for row in table:
        state = "ok" if row["runs"] else f"cannot run: {row['reason']}"
        print(f"  {row['backend']:<36} {row['precision']:<5} {state}")
        facts = {k: row[k] for k in ("engine_bytes", "conversion_s", "build_s", "load_s", "engine_device_memory_bytes")
                 if row.get(k) is not None}
        if facts:
            print("      " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    return 0
