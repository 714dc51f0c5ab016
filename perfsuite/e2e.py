"""End to end: image files on disk -> class labels, timed stage by stage.

Three pipelines feed the same runner:

``pil``          the lab report's: PIL decodes the whole JPEG on the CPU, torchvision's PIL
                 transforms resize and normalize on the CPU, the float batch is copied to the device.
``torchvision``  ``torchvision.io.decode_jpeg`` on the runner's device (nvJPEG on a GPU; the
                 compressed bytes go to the GPU inside the decode call) and the same resize and
                 normalization as tensor operations on the device. JPEG only. On a CPU-only machine
                 the same steps run on the CPU (libjpeg-turbo), which is how CI exercises them.
``pil-draft``    PIL decodes at a reduced scale (JPEG's DCT scaling, ``Image.draft``: the largest
                 1/2, 1/4 or 1/8 reduction that keeps the image at least as large as the resize
                 target), the uint8 pixels are copied to the device, resize and normalization run
                 there. Fewer pixels to decode and to copy; slightly different pixels.

Stages (``STAGES``): read (file -> bytes), decode, preprocess (resize, normalize, cast, layout),
h2d (host-to-device copy), inference (the runner's timed call), postprocess (softmax, top-5,
to the host, labels). Where a pipeline has no separate stage it records None: ``torchvision``'s
copy happens inside decode. With ``stage_times`` every stage ends with a device synchronize
before the clock is read; without, nothing synchronizes until postprocess copies the top-5 to
the host, which is how a deployed pipeline runs (the whole-pipeline benchmark times that).

Parity between pipelines: each pipeline's logits are compared with the ``pil`` pipeline's through
the same runner, under ``PIPELINE_TOLERANCES`` (see the comment above it for the reasoning).

Cold start (:func:`cold_start`, run in a fresh process): imports, CUDA context creation, model
load, runner build and load, then the first run and a second run stage by stage; the first run's
excess over the second is the one-time initialization of each stage (nvJPEG handles, cuDNN and
cuBLAS handles, kernel loading).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from perfsuite.backends.base import Runner
from perfsuite.comparator import ParityReport, compare
from perfsuite.environment import is_cuda, synchronize
from perfsuite.errors import BackendUnavailable, InputError
from perfsuite.images import (
    FIXTURES_DIR,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRANSFORMS,
    ImageError,
    build_transform,
    decode_with_pil,
    fixture_paths,
    read_image_file,
)
from perfsuite.tolerances import Tolerance

PIPELINES = ("pil", "torchvision", "pil-draft")
STAGES = ("read", "decode", "preprocess", "h2d", "inference", "postprocess")
TOP = 5
JPEG_MAGIC = b"\xff\xd8\xff"
#: the smallest size each transform resizes to; draft decoding keeps at least this many pixels
DRAFT_TARGETS = {"report": (224, 224), "eval": (256, 256)}

# How far each pipeline's logits may stray from the pil pipeline's (same runner, same images).
# Pipelines differ in their pixels, not in arithmetic: decoders round the IDCT and chroma
# upsampling differently (libjpeg-turbo in PIL and in torchvision on the CPU, nvJPEG on a GPU: a
# few levels of 255 on some pixels), tensor resizing rounds differently from PIL's, and draft
# decoding averages DCT blocks before the resize. The antialiased 6.9x downscale of dog.jpg
# averages dozens of source pixels per input pixel, so decoder noise mostly cancels. Measured on
# the fixtures (AlexNet fp32, random weights, CPU), max-normalized logit error with the report
# transform: torchvision 2.3e-4, pil-draft 2.4e-2 (cosine 0.9998); with the eval transform 4.0e-4
# and 3.6e-2. Limits: torchvision 1e-2 (25x the CPU figures, room for nvJPEG and fp16), pil-draft
# 5e-2 (1.4x to 2x). Swapping RGB to BGR gives 0.26 (cosine 0.94 on
# cat.jpg), so both limits catch a wrong channel order or normalization. The top-5 check then
# requires every pil top-5 class that leads the 6th by more than 2 x rel x max|logit|
# (``comparator``): with these limits, 3 classes per fixture image for torchvision, 2 for pil-draft.
# allclose: the same budget in logit units (rel x 16, AlexNet's largest logit), no proportional part.
PIPELINE_TOLERANCES = {
    "torchvision": Tolerance(rel=1e-2, min_cosine=0.9999, atol=0.16, rtol=0, name="pipeline torchvision vs pil"),
    "pil-draft": Tolerance(rel=5e-2, min_cosine=0.999, atol=0.8, rtol=0, name="pipeline pil-draft vs pil"),
}


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The top classes of one image: (class index, label, probability), best first."""

    path: str
    top: tuple[tuple[int, str, float], ...]

    @property
    def label(self) -> str:
        return self.top[0][1]


@dataclasses.dataclass
class PipelineRun:
    predictions: list[Prediction]
    stage_seconds: dict[str, float | None]  # None: no such stage in this pipeline (folded into another)
    logits: torch.Tensor | None = None  # fp32 CPU, with keep_logits

    @property
    def total_seconds(self) -> float:
        return sum(v for v in self.stage_seconds.values() if v is not None)


def build_tensor_transform(kind: str = "report") -> Callable[[torch.Tensor], torch.Tensor]:
    """``images.build_transform`` for uint8 CHW tensors on any device: the same resize (bilinear,
    antialiased), scaling to [0, 1] and ImageNet normalization."""
    from torchvision.transforms import v2

    if kind == "report":
        resize = [v2.Resize((224, 224), antialias=True)]
    elif kind == "eval":
        resize = [v2.Resize(256, antialias=True), v2.CenterCrop(224)]
    else:
        raise InputError(f"--transform {kind!r}: choose from {', '.join(TRANSFORMS)}")
    return v2.Compose([*resize, v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def e2e_paths(batch_size: int, folder: Path | None = None) -> list[Path]:
    """dog.jpg alone at batch 1 (the report's image); dog and cat alternating for larger batches."""
    paths = fixture_paths(folder or FIXTURES_DIR)
    return [paths[i % len(paths)] for i in range(batch_size)]


class Pipeline:
    """Image files -> labels through one loaded runner."""

    def __init__(self, kind: str, runner: Runner, categories: Sequence[str], transform: str = "report",
                 top: int = TOP) -> None:
        if kind not in PIPELINES:
            raise InputError(f"pipeline {kind!r}: choose from {', '.join(PIPELINES)}")
        self.kind, self.runner, self.categories, self.top = kind, runner, tuple(categories), top
        self.device = runner.spec.device
        self.transform = transform
        self._pil_transform = build_transform(transform) if kind == "pil" else None
        self._tensor_transform = build_tensor_transform(transform) if kind != "pil" else None

    # -- stages ------------------------------------------------------------------------------
    def _decode(self, files: list[bytearray], paths: Sequence[Path]) -> Any:
        if self.kind == "pil":
            return [decode_with_pil(data, path) for data, path in zip(files, paths)]
        if self.kind == "pil-draft":
            return [decode_with_pil(data, path, DRAFT_TARGETS[self.transform]) for data, path in zip(files, paths)]
        return self._decode_jpeg(files, paths)

    def _decode_jpeg(self, files: list[bytearray], paths: Sequence[Path]) -> list[torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_jpeg

        for data, path in zip(files, paths):
            if bytes(data[:3]) != JPEG_MAGIC:
                raise ImageError(f"image {path}: not a JPEG; the torchvision pipeline decodes JPEG only "
                                 "(the pil pipeline reads every format)")
        encoded = [torch.frombuffer(data, dtype=torch.uint8) for data in files]
        try:
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError as exc:
            raise ImageError(f"image {', '.join(map(str, paths))}: JPEG decoding failed ({exc})") from exc

    def _preprocess(self, images: Any) -> Any:
        if self.kind == "pil":
            return torch.stack([self._pil_transform(image) for image in images])
        batch = torch.stack([self._tensor_transform(image) for image in images])
        return self.runner.prepare(batch)  # cast and layout on the device

    def _to_device(self, images: Any) -> Any:
        if self.kind == "pil":
            return self.runner.prepare(images)
        # pil-draft: uint8 HWC -> CHW on the device, one copy per image (sizes differ)
        return [torch.from_numpy(np.array(image)).permute(2, 0, 1).to(self.device) for image in images]

    def _postprocess(self, output: Any, paths: Sequence[Path]) -> list[Prediction]:
        logits = output if isinstance(output, torch.Tensor) else self.runner.to_tensor(output)
        best = torch.softmax(logits.float(), dim=1).topk(min(self.top, logits.shape[1]), dim=1)
        # One copy to the host instead of two: class indices are exact in float32 (< 2^24).
        packed = torch.cat([best.values, best.indices.float()], dim=1).cpu()
        values, indices = packed[:, :self.top].tolist(), packed[:, self.top:].int().tolist()
        return [
            Prediction(str(path), tuple((i, self._label(i), p) for i, p in zip(row_indices, row_values)))
            for path, row_indices, row_values in zip(paths, indices, values)
        ]

    def _label(self, index: int) -> str:
        return self.categories[index] if index < len(self.categories) else f"class {index}"

    # -- running -----------------------------------------------------------------------------
    def run(self, paths: Sequence[str | Path], *, stage_times: bool = False, keep_logits: bool = False) -> PipelineRun:
        """Files -> predictions; with ``stage_times`` each stage is synchronized and timed."""
        if not paths:
            raise InputError("no image given")
        paths = [Path(p) for p in paths]
        clock: dict[str, float | None] = {}
        mark = [time.perf_counter()]

        def lap(stage: str) -> None:
            if stage_times:
                synchronize(self.device)
                now = time.perf_counter()
                clock[stage] = now - mark[0]
                mark[0] = now

        if stage_times:
            synchronize(self.device)
            mark[0] = time.perf_counter()
        files = [read_image_file(path) for path in paths]
        lap("read")
        decoded = self._decode(files, paths)
        lap("decode")
        if self.kind == "pil":
            batch = self._preprocess(decoded)
            lap("preprocess")
            prepared = self._to_device(batch)
            lap("h2d")
        elif self.kind == "pil-draft":
            on_device = self._to_device(decoded)
            lap("h2d")
            prepared = self._preprocess(on_device)
            lap("preprocess")
        else:
            prepared = self._preprocess(decoded)
            lap("preprocess")
            clock["h2d"] = None
        output = self.runner.infer(prepared)
        lap("inference")
        predictions = self._postprocess(output, paths)
        lap("postprocess")
        logits = self.runner.to_tensor(output) if keep_logits else None
        return PipelineRun(predictions, {stage: clock.get(stage) for stage in STAGES}, logits)

    def stage_medians(self, paths: Sequence[str | Path], runs: int) -> dict[str, float | None]:
        """Median seconds per stage over ``runs`` synchronized runs (after one warm-up run)."""
        self.run(paths, stage_times=True)
        samples = [self.run(paths, stage_times=True).stage_seconds for _ in range(runs)]
        return {stage: (statistics.median(s[stage] for s in samples) if samples[0][stage] is not None else None)
                for stage in STAGES}


def pipeline_parity(kind: str, reference: PipelineRun, candidate: PipelineRun) -> ParityReport:
    """Pipeline ``kind``'s logits (``candidate``) against the pil pipeline's, under its tolerance."""
    if kind not in PIPELINE_TOLERANCES:
        raise InputError(f"pipeline {kind!r}: no parity tolerance; pipelines compared with pil: "
                         f"{', '.join(PIPELINE_TOLERANCES)}")
    if reference.logits is None or candidate.logits is None:
        raise InputError("pipeline parity needs runs made with keep_logits=True")
    return compare(reference.logits, candidate.logits, PIPELINE_TOLERANCES[kind])


def image_facts(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Name, bytes and pixel size of each distinct input file (for the record)."""
    facts = []
    for path in dict.fromkeys(Path(p) for p in paths):
        with Image.open(path) as image:
            facts.append({"file": path.name, "bytes": path.stat().st_size, "width": image.width,
                          "height": image.height})
    return facts


def cold_start(*, process_started: float, pipeline: str, backend: str, model: str, weights: str,
               precision: str, device: str, paths: list[str], transform: str = "report") -> dict[str, Any]:
    """One-time costs of a fresh process, from its first instruction to its first label.

    Meant for a fresh process (see :func:`cold_start_in_fresh_process`); ``process_started`` is
    the process's clock reading before any import.
    """
    import warnings

    from perfsuite.backends import RunSpec, get_runner_class
    from perfsuite.models import load_model

    imported = time.perf_counter()
    if pipeline not in PIPELINES:  # checks that cost nothing come before the expensive work
        raise InputError(f"pipeline {pipeline!r}: choose from {', '.join(PIPELINES)}")
    spec = RunSpec(precision, len(paths), device)
    runner_class = get_runner_class(backend)
    reason = runner_class.unavailable_reason(spec)
    if reason:
        raise BackendUnavailable(reason)
    context_s = None
    if is_cuda(device):
        started = time.perf_counter()
        torch.cuda.init()
        torch.empty(1, device=device)
        synchronize(device)
        context_s = time.perf_counter() - started
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the parent process already reported the weights choice
        loaded = load_model(model, weights)
    model_load_s = time.perf_counter() - started
    runner = runner_class(loaded, spec)
    runner.load()
    runner_ready = time.perf_counter()
    flow = Pipeline(pipeline, runner, loaded.categories, transform)
    first = flow.run(paths, stage_times=True)
    first_label = time.perf_counter()
    warm = flow.run(paths, stage_times=True)
    runner.release()
    one_time = {stage: (first.stage_seconds[stage] - warm.stage_seconds[stage]
                        if first.stage_seconds[stage] is not None else None) for stage in STAGES}
    return {
        "import_s": imported - process_started,
        "cuda_context_s": context_s,
        "model_load_s": model_load_s,
        "runner_build_s": runner.build_seconds,
        "runner_load_s": runner.load_seconds,
        "runner_ready_s": runner_ready - process_started,
        "first_run_stages_s": first.stage_seconds,
        "first_run_s": first.total_seconds,
        "second_run_stages_s": warm.stage_seconds,
        "second_run_s": warm.total_seconds,
        "one_time_stage_s": one_time,
        "time_to_first_label_s": first_label - process_started,
        "first_labels": [p.label for p in first.predictions],
    }


def cold_start_in_fresh_process(pipeline: str, backend: str, model: str, weights: str, precision: str,
                                device: str, paths: Sequence[str | Path], transform: str = "report",
                                timeout_s: float = 600.0) -> dict[str, Any]:
    """:func:`cold_start` in a new interpreter."""
    from perfsuite.fresh_process import run_in_fresh_process

    kwargs = {"pipeline": pipeline, "backend": backend, "model": model, "weights": weights,
              "precision": precision, "device": device, "paths": [str(p) for p in paths], "transform": transform}
    return run_in_fresh_process("perfsuite.e2e.cold_start", kwargs, timeout_s=timeout_s)
