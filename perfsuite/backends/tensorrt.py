"""``tensorrt`` and ``tensorrt-rtx``: the suite's ONNX export built into a strongly typed TensorRT engine.

One path for both flavors: export_onnx (cached) -> build_engine -> EngineCache -> EngineSession.
Precision comes from the ONNX dtypes. TensorRT-RTX builds without a GPU (CI builds real engines on
the CPU); :class:`EngineSession` needs a GPU the runtime supports, which no machine here has: it is
written from NVIDIA's documented API. Failures raise :class:`BackendError` with TensorRT's words (the
test fails); only the environment gives :class:`BackendUnavailable` (a skip), a runtime refusing this
GPU's compute capability included (read from its message on the real deserialization). TensorRT's
warnings and errors go to the ``perfsuite.tensorrt`` logger.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from perfsuite import environment
from perfsuite.backends.base import BackendConfig, Runner, RunSpec
from perfsuite.config import load_suite_config
from perfsuite.engine_cache import ArtifactKey, Built, CachedArtifact, EngineCache, conversion_facts, gpu_target
from perfsuite.errors import BackendError, BackendUnavailable, InputError
from perfsuite.models import LoadedModel
from perfsuite.onnx_export import IMAGE_SHAPE, INPUT_NAME, MAX_DYNAMIC_BATCH, OUTPUT_NAME, export_facts, export_onnx
from perfsuite.results import write_bytes_atomic
from perfsuite.validation import validate

_log = logging.getLogger("perfsuite.tensorrt")
_LEVELS = {"INTERNAL_ERROR": logging.ERROR, "ERROR": logging.ERROR, "WARNING": logging.WARNING}
_UNSUPPORTED_GPU = re.compile(r"cannot run on this GPU|does not support this compute capability")
_DTYPES = {"fp32": ("FLOAT", torch.float32), "fp16": ("HALF", torch.float16), "bf16": ("BF16", torch.bfloat16)}


@dataclasses.dataclass(frozen=True)
class TensorRTFlavor:
    """What differs between full TensorRT and TensorRT-RTX."""

    name: str  # backend name and cache flavor
    title: str
    module_name: str
    extra: str  # the pip extra that installs it
    builds_without_gpu: bool  # RTX; full TensorRT builds on (and for) its GPU, keeping a timing cache

    def module(self) -> Any:
        try:
            return importlib.import_module(self.module_name)
        except ImportError as exc:
            raise BackendUnavailable(f"{self.name}: {exc}; pip install 'perfsuite[{self.extra}]'") from exc

    def version(self) -> str:
        return str(self.module().__version__)


TENSORRT = TensorRTFlavor("tensorrt", "TensorRT", "tensorrt", "tensorrt", builds_without_gpu=False)
TENSORRT_RTX = TensorRTFlavor("tensorrt-rtx", "TensorRT-RTX", "tensorrt_rtx_bindings", "rtx", builds_without_gpu=True)


@functools.cache
def flavor_logger(flavor: TensorRTFlavor) -> Any:
    """The flavor's one ILogger (TensorRT keeps a process's first): to ``logging``, errors also to ``errors``."""
    trt = flavor.module()

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # pybind11 needs the base __init__
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = _LEVELS.get(severity.name, logging.DEBUG)
            _log.log(level, "%s: %s", flavor.title, msg)
            if level >= logging.ERROR:
                self.errors.append(msg if len(msg) < 800 else msg[:800] + "…")

    return Logger()


_BATCH = {"type": "integer", "minimum": 1, "maximum": MAX_DYNAMIC_BATCH}
CONFIG_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {
    "dynamic_batch": {"type": "boolean"}, "min_batch": _BATCH, "opt_batch": _BATCH, "max_batch": _BATCH,
    "optimization_level": {"type": ["integer", "null"], "minimum": 0, "maximum": 5},
    "compute_capabilities": {"type": "array", "items": {"type": "string", "pattern": r"^\d+\.\d$"}},
}}


@dataclasses.dataclass(frozen=True)
class TensorRTConfig(BackendConfig):
    """Engine build settings, also ``[tool.perfsuite.tensorrt]`` (:data:`CONFIG_SCHEMA`); all are in the key."""

    dynamic_batch: bool = False  # one engine with an optimization profile (min/opt/max batch) for every batch
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = MAX_DYNAMIC_BATCH  # the dynamic ONNX export's limit
    optimization_level: int | None = None  # builder optimization level 0-5; None: the library's (3)
    compute_capabilities: tuple[str, ...] = ()  # RTX targets, e.g. ("8.6",); (): the GPU's own or the library's

    def __post_init__(self) -> None:
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise InputError(f"[tool.perfsuite.tensorrt]: need min_batch <= opt_batch <= max_batch: {self.profile()}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None) -> TensorRTConfig:
        values = load_suite_config().extra.get("tensorrt", {}) if values is None else values
        validate(values, CONFIG_SCHEMA, "[tool.perfsuite.tensorrt]")
        return cls(**{**values, "compute_capabilities": tuple(values.get("compute_capabilities", ()))})

    def profile(self) -> dict[str, tuple[int, ...]]:  # the dynamic batch's input shapes
        batches = {"min": self.min_batch, "opt": self.opt_batch, "max": self.max_batch}
        return {k: (n, *IMAGE_SHAPE) for k, n in batches.items()}


@functools.cache
def _progress_class(flavor: TensorRTFlavor) -> type:
    from tqdm import tqdm  # an extra's package: imported only where a build needs it

    trt = flavor.module()

    class Progress(trt.IProgressMonitor):  # TensorRT's build phases as tqdm bars, drawn only on a terminal
        def __init__(self, label: str) -> None:
            trt.IProgressMonitor.__init__(self)  # pybind11 needs the base __init__
            self.label, self.bars = label, {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.bars[phase_name] = tqdm(total=num_steps, desc=f"{self.label}: {phase_name}", unit="step",
                                         leave=parent_phase is None, disable=None)

        def step_complete(self, phase_name: str, step: int) -> bool:
            self.bars[phase_name].update()
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            self.bars.pop(phase_name).close()

    return Progress


def build_engine(flavor: TensorRTFlavor, onnx_bytes: bytes, precision: str, config: TensorRTConfig,
                 tf32: bool | None = None, timing_cache_path: Path | None = None, source: str = "ONNX model") -> Built:
    """ONNX -> strongly typed network -> serialized engine (``tf32`` None: the library's default); tqdm
    draws the progress on stderr if it is a terminal."""
    trt = flavor.module()
    builder = trt.Builder(flavor_logger(flavor))
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)  # absent: implied (11)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, flavor_logger(flavor))  # points into the network: both live to the end
    what = f"{source} ({len(onnx_bytes)} bytes)"
    if not parser.parse(onnx_bytes):
        errors = [parser.get_error(index) for index in range(parser.num_errors)]
        raise BackendError(f"{what}: {flavor.title}'s ONNX parser rejected it: " + "; ".join(
            f"{e.code().name} at node {e.node()} ({e.node_operator()}): {e.desc()}" for e in errors))
    image = network.get_input(0) if network.num_inputs == 1 else None  # bytes that decode as protobuf: 0 inputs
    if image is None or image.dtype.name != _DTYPES[precision][0]:  # precision must come from the ONNX dtypes
        raise BackendError(f"{what}: parsed to {network.num_inputs} input(s) of type "
                           f"{image.dtype.name if image else '-'}; {precision} needs one {_DTYPES[precision][0]} input")
    builder_config = builder.create_builder_config()
    builder_config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer detail for polygraphy inspect
    if config.optimization_level is not None:
        builder_config.builder_optimization_level = config.optimization_level
    if tf32 is not None:
        (builder_config.set_flag if tf32 else builder_config.clear_flag)(trt.BuilderFlag.TF32)
    if config.dynamic_batch:
        profile = builder.create_optimization_profile()
        profile.set_shape(image.name, *config.profile().values())
        builder_config.add_optimization_profile(profile)
    if config.compute_capabilities:
        builder_config.num_compute_capabilities = len(config.compute_capabilities)
    for index, capability in enumerate(config.compute_capabilities):
        member = getattr(trt.ComputeCapability, "SM" + capability.replace(".", ""), None)
        if member is None:
            raise InputError(f"compute capability {capability}: {flavor.title} targets "
                             + ", ".join(trt.ComputeCapability.__members__))
        builder_config.set_compute_capability(member, index)
    if timing_cache_path is not None:  # a file TensorRT rejects (other version, corrupt) gives None: start afresh
        timing_cache = builder_config.create_timing_cache(timing_cache_path.read_bytes()
                                                          if timing_cache_path.is_file() else b"")
        builder_config.set_timing_cache(timing_cache or builder_config.create_timing_cache(b""), False)
    progress = _progress_class(flavor)(source)
    builder_config.progress_monitor = progress  # TensorRT keeps a raw pointer: ``progress`` outlives the build
    flavor_logger(flavor).errors.clear()
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise BackendError(f"{flavor.name}: build_serialized_network failed for {what}: "
                           + "; ".join(flavor_logger(flavor).errors))
    if timing_cache_path is not None:
        write_bytes_atomic(timing_cache_path, builder_config.get_timing_cache().serialize())
    return Built(bytes(serialized))


def get_engine(flavor: TensorRTFlavor, model: LoadedModel, precision: str, batch_size: int, config: TensorRTConfig,
               device: str, cache: EngineCache | None = None) -> tuple[CachedArtifact, CachedArtifact]:
    """(the ONNX export, the engine built from it), each from the cache or made now. The engine's key
    holds the export's sha256, so a changed export (a torch or onnxscript upgrade) builds a new engine."""
    cache = cache if cache is not None else EngineCache()
    on_gpu = environment.is_cuda(device)
    if not on_gpu and not flavor.builds_without_gpu:
        raise BackendUnavailable(f"{flavor.name}: {flavor.title} builds engines on a CUDA GPU; device is {device}")
    if config.dynamic_batch and not config.min_batch <= batch_size <= config.max_batch:
        raise InputError(f"{flavor.name}: batch size {batch_size} is outside {config.min_batch}..{config.max_batch}, "
                         "the dynamic profile of [tool.perfsuite.tensorrt]")
    capabilities, timing_path = config.compute_capabilities, None
    if flavor.builds_without_gpu:
        if not capabilities and on_gpu:  # the GPU's own where RTX can target it, else the library's set
            own = gpu_target(device)["compute_capability"]
            capabilities = (own,) if hasattr(flavor.module().ComputeCapability, "SM" + own.replace(".", "")) else ()
        target: dict[str, Any] = {"compute_capabilities": list(capabilities) or "library default"}
    else:
        target = gpu_target(device)
        timing_path = cache.timing_cache_path(f"{flavor.name}-{flavor.version()}-{target['gpu']}-"
                                              f"{target['compute_capability']}")
    tf32 = environment.tf32_in_effect(device) if on_gpu else None  # the row's numeric mode is the engine's
    resolved = dataclasses.replace(config, compute_capabilities=capabilities)
    export = export_onnx(model, precision, None if config.dynamic_batch else batch_size, cache)
    shape = config.profile() if config.dynamic_batch else (batch_size, *IMAGE_SHAPE)
    key = ArtifactKey(
        backend=flavor.name, flavor=flavor.name, library_version=flavor.version(), model=model.name,
        model_fingerprint=model.fingerprint, target=target, precision=precision, shapes={INPUT_NAME: shape},
        options={"onnx_sha256": export.sha256, "strongly_typed": True, "optimization_level": config.optimization_level,
                 "tf32": tf32, "profiling_verbosity": "DETAILED"},
    )
    source = f"{flavor.name} {model.name} {precision} ({export.path.name})"
    return export, cache.get_or_build(key, lambda: build_engine(flavor, export.data, precision, resolved, tf32,
                                                                timing_path, source))


class EngineSession:
    """A deserialized engine and one execution context on the session's own CUDA stream, ordered after
    torch's current stream (which made the input) and before it (which reads the output) by two events
    each call. The output is allocated when the input shape changes, outside the timed path."""

    def __init__(self, flavor: TensorRTFlavor, data: bytes, device: str) -> None:
        trt = flavor.module()
        self.flavor, self.device = flavor, torch.device("cuda", environment.cuda_index(device))
        errors = self._errors = flavor_logger(flavor).errors  # cleared before each checked call
        self._runtime = trt.Runtime(flavor_logger(flavor))  # must outlive the engine
        errors.clear()
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:  # RTX 1.7 on an H200: "The engine cannot run on this GPU, which has compute
            if _UNSUPPORTED_GPU.search(" ".join(errors)):  # capability 9.0. ...": the environment, a skip
                raise BackendUnavailable(f"{flavor.name}: the {flavor.title} {flavor.version()} runtime cannot run on "
                                         f"{torch.cuda.get_device_name(self.device)}: {'; '.join(errors)}")
            raise BackendError(f"{flavor.name}: deserialize_cuda_engine failed: {'; '.join(errors)}")
        errors.clear()
        self._context = self.engine.create_execution_context()
        if self._context is None:
            raise BackendError(f"{flavor.name}: create_execution_context failed: {'; '.join(errors)}")
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        if names != {INPUT_NAME, OUTPUT_NAME}:
            raise BackendError(f"{flavor.name}: engine I/O {sorted(names)}, expected {INPUT_NAME} and {OUTPUT_NAME}")
        self.dtypes = {n: dict(_DTYPES.values())[self.engine.get_tensor_dtype(n).name] for n in names}
        self._stream = torch.cuda.Stream(self.device)
        self._inputs_ready, self._finished = torch.cuda.Event(), torch.cuda.Event()
        self._shape: torch.Size | None = None

    def run(self, images: torch.Tensor) -> torch.Tensor:
        """Enqueue one inference; the logits are ready for work queued later on torch's current stream."""
        if images.dtype != self.dtypes[INPUT_NAME] or images.device != self.device or not images.is_contiguous():
            raise InputError(f"{self.flavor.name}: input must be a contiguous {self.dtypes[INPUT_NAME]} tensor on "
                             f"{self.device}, got {images.dtype} on {images.device}")
        if images.shape != self._shape:  # a new shape: set it and allocate the output, once
            if not self._context.set_input_shape(INPUT_NAME, tuple(images.shape)):
                raise InputError(f"{self.flavor.name}: input shape {tuple(images.shape)} is outside the profile")
            self._logits = torch.empty(tuple(self._context.get_tensor_shape(OUTPUT_NAME)),
                                       dtype=self.dtypes[OUTPUT_NAME], device=self.device)
            self._logits.record_stream(self._stream)  # freed memory is reused only after the session's work
            self._context.set_tensor_address(OUTPUT_NAME, self._logits.data_ptr())
            self._shape = images.shape
        self._context.set_tensor_address(INPUT_NAME, images.data_ptr())
        # Ordered after whatever is queued on torch's current stream, a hold of it included: device time
        # (perfsuite.device_time) holds that stream, so this enqueue waits behind the hold, and the end
        # event recorded there after ``current.wait_event(self._finished)`` covers the engine's work.
        current = torch.cuda.current_stream(self.device)
        self._inputs_ready.record(current)
        self._stream.wait_event(self._inputs_ready)
        self._errors.clear()
        with torch.cuda.device(self.device):  # TensorRT enqueues in the current device's context: the engine's
            enqueued = self._context.execute_async_v3(self._stream.cuda_stream)
        if not enqueued:
            raise BackendError(f"{self.flavor.name}: execute_async_v3 failed: {'; '.join(self._errors)}")
        self._finished.record(self._stream)
        current.wait_event(self._finished)
        return self._logits


def engine_facts(engine: Any) -> dict[str, Any]:
    """The engine's own device memory per execution context (TensorRT >= 10.1 and RTX), its layer count."""
    return {"engine_device_memory_bytes": getattr(engine, "device_memory_size_v2", None),
            "engine_layers": engine.num_layers}


_REFUSED: dict[tuple[str, str], str] = {}  # (flavor, device) -> the runtime's refusal: later specs skip at once


class TensorRTRunner(Runner):
    """Full TensorRT: engines built on (and for) the GPU that runs them."""

    name = "tensorrt"
    flavor: ClassVar[TensorRTFlavor] = TENSORRT
    requires = (TENSORRT.module_name, "onnx", "onnxscript", "tqdm")
    extra = TENSORRT.extra
    config: TensorRTConfig

    def __init__(self, model: LoadedModel, spec: RunSpec, config: TensorRTConfig | None = None) -> None:
        super().__init__(model, spec, config if config is not None else TensorRTConfig.from_mapping())
        self.export = self.engine = self._session = None

    @classmethod
    def _device_reason(cls, spec: RunSpec) -> str | None:
        if not environment.is_cuda(spec.device):
            return (f"{cls.flavor.name}: {cls.flavor.title} runs inference only on a CUDA GPU; device is {spec.device}"
                    + ("; its engines still build here, see docs/tensorrt.md" if cls.flavor.builds_without_gpu else ""))
        return _REFUSED.get((cls.flavor.name, spec.device))

    def _build(self) -> None:
        export, self.engine = get_engine(self.flavor, self.model, self.spec.precision, self.spec.batch_size,
                                         self.config, self.spec.device)
        self.export = export.without_data()  # built into the engine

    def _load(self) -> None:
        with torch.cuda.device(torch.device(self.spec.device)):
            try:
                self._session = EngineSession(self.flavor, self.engine.data, self.spec.device)
            except BackendUnavailable as exc:
                _REFUSED[(self.flavor.name, self.spec.device)] = str(exc)
                raise
        self.engine = self.engine.without_data()  # the engine lives on the GPU now

    def infer(self, prepared: torch.Tensor) -> torch.Tensor:
        return self._session.run(prepared)

    def _release(self) -> None:
        self._session = None

    def metrics(self) -> dict[str, Any]:
        facts = {**super().metrics(), "tensorrt_flavor": self.flavor.name, "dynamic_batch": self.config.dynamic_batch}
        if self.export is not None and self.engine is not None:
            facts.update({**conversion_facts(self.export, self.engine), **export_facts(self.export),
                          "engine_bytes": self.engine.size, "engine_build_s": self.engine.build_s,
                          "engine_shapes": self.engine.key.shapes, "engine_target": dict(self.engine.key.target)})
        return {**facts, **(engine_facts(self._session.engine) if self._session is not None else {})}


class TensorRTRtxRunner(TensorRTRunner):
    """TensorRT-RTX: the same path; engines target compute capabilities, built with or without a GPU."""

    name = "tensorrt-rtx"
    flavor = TENSORRT_RTX
    requires = (TENSORRT_RTX.module_name, "onnx", "onnxscript", "tqdm")
    extra = TENSORRT_RTX.extra
