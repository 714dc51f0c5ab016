"""``perfsuite predict IMAGE...``: top-5 classes per image, with load, conversion and inference times."""

from __future__ import annotations

import argparse
import sys

import torch

from perfsuite.commands._common import add_backend_options, add_model_options, load_model_reporting_warnings
from perfsuite.errors import BackendUnavailable
from perfsuite.images import ImageError, build_transform, load_image, orientation_note

WARM_RUNS = 10


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


#: shown at the end of ``--help``
EXAMPLES = """\
examples:
  perfsuite predict fixtures/dog.jpg
  perfsuite predict fixtures/*.jpg --backend onnxruntime --precision fp32 --top 3
"""

def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="classify images and time each step (synchronized)")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    add_model_options(parser)
    add_backend_options(parser)
    parser.add_argument("--top", type=positive_int, default=5, help="classes to show per image (default: 5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from perfsuite.backends import RunSpec, get_runner_class
    from perfsuite.environment import resolve_device
    from perfsuite.measure import MeasureSettings, measure
    from perfsuite.timing import time_once

    device = resolve_device(args.device)
    model = load_model_reporting_warnings(args.model, args.weights)
    spec = RunSpec(args.precision, 1, device)
    runner = get_runner_class(args.backend)(model, spec)
    try:
        runner.load()
    except BackendUnavailable as exc:
        print(f"perfsuite predict: {exc}", file=sys.stderr)
        return 2
    print(f"model {model.name}, weights {model.weights} ({model.weights_source}), fingerprint "
          f"{model.short_fingerprint}")
    print(f"backend {args.backend} {args.precision} on {device}: model load {model.load_seconds * 1e3:.1f} ms, "
          f"conversion {runner.build_seconds * 1e3:.1f} ms, runner load {runner.load_seconds * 1e3:.1f} ms")
    for key, value in runner.metrics().items():
        if key not in ("build_s", "load_s") and value is not None:
            print(f"  {key}: {value}")

    transform = build_transform(args.transform)
    failures = 0
    for path in args.images:
        try:
            image = load_image(path)
        except ImageError as exc:
            print(f"\n{path}: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        prepared = runner.prepare(transform(image).unsqueeze(0))
        cold, output = time_once(lambda p=prepared: runner.infer(p), device)
        # Read the output now: CUDA-graph backends return a static buffer that the next call overwrites.
        logits = runner.to_tensor(output)[0].double()
        if not bool(torch.isfinite(logits).all()):  # a softmax of NaN prints "nan%" as if it were an answer
            bad = int((~torch.isfinite(logits)).sum())
            print(f"\n{path}: error: the model's output holds {bad} NaN or Inf logit(s) ({args.backend} "
                  f"{args.precision} on {device}): no classification", file=sys.stderr)
            failures += 1
            continue
        probabilities = torch.softmax(logits, dim=0)
        warm = measure(lambda p=prepared: runner.infer(p), device,
                       MeasureSettings(warmup_rounds=1, max_time=0.0, min_rounds=WARM_RUNS, host_probe=False))
        top = probabilities.topk(min(args.top, probabilities.numel()))
        print(f"\n{path} ({image.width}x{image.height}): inference first {cold * 1e3:.2f} ms, "
              f"warm median {warm.median_s * 1e3:.2f} ms of {len(warm.samples)} rounds of "
              f"{warm.timing['calls_per_round']} call(s) (synchronized)")
        note = orientation_note(image)
        if note:
            print(f"  {note}")
        for rank, (p, index) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
            name = model.categories[index] if index < len(model.categories) else f"class {index}"
            print(f"  {rank}. {name:<30} {p:7.2%}  (index {index})")
    runner.release()
    if failures:
        print(f"\n{failures} of {len(args.images)} image(s) could not be read or classified", file=sys.stderr)
        return 1
    return 0
