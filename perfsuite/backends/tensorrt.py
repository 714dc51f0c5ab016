"""``tensorrt`` and ``tensorrt-rtx``: the shared ONNX export built into a strongly typed TensorRT engine.

One code path serves both flavors; a :class:`TensorRTFlavor` holds what differs (the module, the
pip extra, flavor-specific build settings). The steps, each a function the tests call directly:

    export_onnx (perfsuite.onnx_export) -> parse_onnx -> build_serialized_engine -> EngineCache
        -> deserialize_engine -> EngineSession.run (execute_async_v3 on torch's current stream)

Precision is carried by the ONNX dtypes (fp32, fp16, bf16 exports) into a strongly typed network:
TensorRT 10 needs the ``STRONGLY_TYPED`` creation flag, TensorRT 11 and TensorRT-RTX are always
strongly typed (11 removed the FP16/INT8 builder flags). Features are detected, never inferred
from version strings.

TensorRT-RTX builds engines without a GPU (CI builds real AlexNet engines on the CPU); its runtime
runs only on the compute capabilities it ships kernels for, and on other GPUs (H100/H200: 9.0) the
reason it cannot run comes from a real ``deserialize_cuda_engine`` attempt (:func:`probe_runtime`).

Every TensorRT name the code touches is listed in :data:`TRT_API`; ``tests/test_tensorrt_api.py``
checks that the list covers this module's uses and that each name exists on the real bindings.

Settings: :class:`TensorRTConfig`, also read from ``[tool.perfsuite.tensorrt]`` in pyproject.toml,
e.g. ``dynamic_batch = true`` for one engine (an optimization profile) serving every batch size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, TextIO

import numpy as np
import torch

from perfsuite import environment
from perfsuite.backends.base import BackendConfig, Runner, RunSpec, missing_modules
from perfsuite.engine_cache import Built, CachedEngine, EngineCache, EngineKey
from perfsuite.errors import BackendUnavailable, InputError
from perfsuite.models import LoadedModel
from perfsuite.onnx_export import EXPORTER, INPUT_NAME, MAX_DYNAMIC_BATCH, OPSET, export_onnx
from perfsuite.results import write_bytes_atomic

_log = logging.getLogger("perfsuite.tensorrt")
_log.addHandler(logging.NullHandler())  # TensorRT's messages reach errors' texts; print them only on request

#: The image input every export has, after the batch dimension (see perfsuite.onnx_export).
IMAGE_SHAPE = (3, 224, 224)

#: Every TensorRT class, method, attribute and enum member this module uses, by owner ("" is the
#: module). "runtime" is what only a machine with a supported GPU executes (CI checks the names
#: exist); "build" also runs on the CPU with TensorRT-RTX.
TRT_API: dict[str, dict[str, tuple[str, ...]]] = {
    "runtime": {
        "": ("Runtime", "ILogger", "ICudaEngine", "IExecutionContext", "TensorIOMode", "DataType",
             "LayerInformationFormat", "ComputeCapability", "__version__"),
        "ILogger": ("__init__",),
        "Runtime": ("deserialize_cuda_engine",),
        "ICudaEngine": ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype",
                        "create_execution_context", "create_engine_inspector", "num_layers"),
        "IExecutionContext": ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3"),
        "EngineInspector": ("get_engine_information",),
        "TensorIOMode": ("INPUT",),
        "DataType": ("FLOAT", "HALF", "BF16", "INT8", "INT32", "INT64", "BOOL", "UINT8"),
        "LayerInformationFormat": ("JSON",),
        "ComputeCapability": ("__members__",),
    },
    "build": {
        "": ("Builder", "OnnxParser", "IProgressMonitor", "NetworkDefinitionCreationFlag", "BuilderFlag",
             "ProfilingVerbosity", "ActivationType", "MatrixOperation", "Weights"),
        "IProgressMonitor": ("__init__",),
        "Builder": ("create_network", "create_builder_config", "create_optimization_profile",
                    "build_serialized_network"),
        "INetworkDefinition": ("num_inputs", "num_outputs", "get_input", "add_input", "add_constant",
                               "add_matrix_multiply", "add_activation", "mark_output"),
        "ITensor": ("name", "shape", "dtype"),
        "ILayer": ("get_output",),
        "OnnxParser": ("parse", "num_errors", "get_error"),
        "ParserError": ("code", "desc", "node", "node_operator"),
        "IBuilderConfig": ("add_optimization_profile", "builder_optimization_level", "profiling_verbosity",
                           "progress_monitor", "set_flag", "clear_flag", "num_compute_capabilities",
                           "set_compute_capability", "create_timing_cache", "set_timing_cache", "get_timing_cache"),
        "IOptimizationProfile": ("set_shape",),
        "ITimingCache": ("serialize",),
        "NetworkDefinitionCreationFlag": ("STRONGLY_TYPED",),
        "BuilderFlag": ("TF32",),
        "ProfilingVerbosity": ("DETAILED",),
        "ActivationType": ("RELU",),
        "MatrixOperation": ("NONE",),
    },
}


# -- flavors ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TensorRTFlavor:
    """What differs between full TensorRT and TensorRT-RTX; everything else is shared."""

    name: str  # backend name and cache "flavor"
    title: str
    module_name: str
    extra: str  # pip extra that installs it
    #: builds need a GPU (full TensorRT) or can target compute capabilities without one (RTX)
    builds_without_gpu: bool
    #: a persisted timing cache speeds up rebuilds (full TensorRT; RTX makes timing-cache calls no-ops)
    timing_cache: bool

    def module(self) -> Any:
        try:
            return importlib.import_module(self.module_name)
        except ImportError as exc:
            raise BackendUnavailable(
                f"{self.name}: cannot import {self.module_name} ({exc}); pip install 'perfsuite[{self.extra}]'"
            ) from exc

    def version(self) -> str:
        trt = self.module()
        return str(trt.__version__)


TENSORRT = TensorRTFlavor(name="tensorrt", title="TensorRT", module_name="tensorrt", extra="tensorrt",
                          builds_without_gpu=False, timing_cache=True)
TENSORRT_RTX = TensorRTFlavor(name="tensorrt-rtx", title="TensorRT-RTX", module_name="tensorrt_rtx_bindings",
                              extra="rtx", builds_without_gpu=True, timing_cache=False)


# -- logging: one logger per flavor per process ---------------------------------------------------


class _LogRelay:
    """Python side of the TensorRT logger: forwards to ``logging`` and to active captures.

    TensorRT uses only the first logger registered in a process (a later Builder/Runtime with
    another logger gets a warning and the first one), so each flavor has exactly one.
    """

    def __init__(self) -> None:
        self._captures: list[list[str]] = []

    def log(self, severity_name: str, message: str) -> None:
        if severity_name in ("INTERNAL_ERROR", "ERROR", "WARNING"):
            for capture in self._captures:
                capture.append(f"[{severity_name}] {message}")
            _log.log(logging.WARNING if severity_name == "WARNING" else logging.ERROR, "%s", message)
        elif severity_name == "INFO":
            _log.debug("%s", message)

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[str]]:
        """Collect the warnings and errors TensorRT logs inside the block."""
        messages: list[str] = []
        self._captures.append(messages)
        try:
            yield messages
        finally:  # by identity: nested captures hold equal lists
            self._captures[:] = [active for active in self._captures if active is not messages]


@functools.cache
def flavor_logger(flavor: TensorRTFlavor) -> Any:
    """The process-wide ``ILogger`` of ``flavor`` (its ``relay`` attribute captures messages)."""
    trt = flavor.module()

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # pybind11 requires the base __init__
            self.relay = _LogRelay()

        def log(self, severity: Any, msg: str) -> None:
            self.relay.log(severity.name, msg)

    return Logger()


def _errors_text(messages: list[str], limit: int = 3) -> str:
    """The first few messages, errors before warnings, each cut to 400 characters."""
    ordered = sorted(messages, key=lambda m: not m.startswith(("[ERROR]", "[INTERNAL_ERROR]")))
    shown = [m if len(m) <= 400 else m[:400] + "…" for m in ordered[:limit]]
    more = f" (+{len(messages) - limit} more)" if len(messages) > limit else ""
    return "; ".join(shown) + more if shown else "nothing logged"


# -- progress -----------------------------------------------------------------------------------


class BuildProgress:
    """Counts a build's progress events; draws a one-line status when ``stream`` is a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None, show: bool | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.show = bool(getattr(self.stream, "isatty", lambda: False)()) if show is None else show
        self.phases_started = self.phases_finished = self.steps = 0
        self.phases: list[str] = []  # top-level first, in start order
        self._started = time.perf_counter()

    @property
    def events(self) -> int:
        return self.phases_started + self.steps + self.phases_finished

    def phase_start(self, phase: str, parent: str | None, num_steps: int) -> None:
        self.phases_started += 1
        self.phases.append(phase)
        self._draw(f"{phase} (0/{num_steps})")

    def step_complete(self, phase: str, step: int) -> bool:
        self.steps += 1
        self._draw(f"{phase} (step {step + 1})")
        return True  # False would cancel the build

    def phase_finish(self, phase: str) -> None:
        self.phases_finished += 1
        if self.phases_finished == self.phases_started:  # the outermost phase ended
            self._draw(f"done in {time.perf_counter() - self._started:.1f} s", end="\n")

    def _draw(self, text: str, end: str = "") -> None:
        if not self.show:
            return
        try:
            self.stream.write(f"\r\x1b[K{self.label}: {text}{end}")
            self.stream.flush()
        except (OSError, ValueError):  # a closed terminal must not break the build
            self.show = False

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "phases_started": self.phases_started,
                "phases_finished": self.phases_finished, "steps": self.steps}


@functools.cache
def _monitor_class(flavor: TensorRTFlavor) -> type:
    trt = flavor.module()

    class Monitor(trt.IProgressMonitor):
        """Adapter: TensorRT's callbacks -> a BuildProgress."""

        def __init__(self, progress: BuildProgress) -> None:
            trt.IProgressMonitor.__init__(self)  # pybind11 requires the base __init__
            self.progress = progress

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return self.progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            self.progress.phase_finish(phase_name)

    return Monitor


# -- configuration ------------------------------------------------------------------------------


def _capability_text(value: str) -> str:
    """'8.6', '86', 'sm86' or 'SM_86' -> '8.6'."""
    digits = re.sub(r"^(sm_?)", "", str(value).strip().lower())
    if re.fullmatch(r"\d+\.\d", digits):
        return digits
    if re.fullmatch(r"\d{2,3}", digits):
        return f"{digits[:-1]}.{digits[-1]}"
    raise InputError(f"compute capability {value!r}: write it as 8.6 (or 86, sm86)")


@dataclasses.dataclass(frozen=True)
class TensorRTConfig(BackendConfig):
    """Engine build settings; each one that changes the engine is part of its cache key."""

    #: one engine with an optimization profile (min/opt/max batch) instead of one per batch size
    dynamic_batch: bool = False
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = MAX_DYNAMIC_BATCH
    #: builder optimization level 0-5 (None: the library's default, 3)
    optimization_level: int | None = None
    #: TF32 for fp32 layers; None follows torch's setting on the device (so the numeric mode a
    #: benchmark records is the engine's), the library default (on) when building without a GPU
    tf32: bool | None = None
    #: TensorRT-RTX targets, e.g. ("8.6", "8.9"); empty: the GPU's own, or the library's default set
    compute_capabilities: tuple[str, ...] = ()
    #: persist TensorRT's timing cache between builds (full TensorRT only)
    timing_cache: bool = True

    def __post_init__(self) -> None:
        source = "[tool.perfsuite.tensorrt]"
        for name in ("min_batch", "opt_batch", "max_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{source} {name} = {value!r}: must be a positive integer")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise InputError(f"{source}: need min_batch <= opt_batch <= max_batch, got "
                             f"{self.min_batch}, {self.opt_batch}, {self.max_batch}")
        if self.max_batch > MAX_DYNAMIC_BATCH:
            raise InputError(f"{source} max_batch = {self.max_batch}: the dynamic ONNX export allows at most "
                             f"{MAX_DYNAMIC_BATCH}")
        if self.optimization_level is not None and self.optimization_level not in range(6):
            raise InputError(f"{source} optimization_level = {self.optimization_level!r}: choose 0 to 5")
        object.__setattr__(self, "compute_capabilities",
                           tuple(_capability_text(c) for c in self.compute_capabilities))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "[tool.perfsuite.tensorrt]") -> TensorRTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(values)
        if isinstance(values.get("compute_capabilities"), (list, tuple)):
            values["compute_capabilities"] = tuple(values["compute_capabilities"])
        return cls(**values)

    @classmethod
    def from_suite(cls) -> TensorRTConfig:
        from perfsuite.config import load_suite_config

        return cls.from_mapping(load_suite_config().extra.get("tensorrt", {}))


# -- build ----------------------------------------------------------------------------------------


class OnnxParseError(InputError):
    """TensorRT's ONNX parser rejected a model."""


class EngineBuildError(BackendUnavailable):
    """A real build attempt failed; the message carries what TensorRT logged."""


class EngineLoadError(BackendUnavailable):
    """``deserialize_cuda_engine`` or context creation failed; the message carries TensorRT's log."""


@dataclasses.dataclass
class ParsedNetwork:
    """A parsed network. Holds builder, network and parser together: the parser keeps a raw
    pointer to the network, so dropping the network first crashes TensorRT."""

    flavor: TensorRTFlavor
    builder: Any
    network: Any
    parser: Any

    def inputs(self) -> list[tuple[str, tuple[int, ...], Any]]:
        """(name, shape with -1 for dynamic dimensions, TensorRT dtype) of each input."""
        network = self.network
        result = []
        for index in range(network.num_inputs):
            itensor = network.get_input(index)
            result.append((itensor.name, tuple(itensor.shape), itensor.dtype))
        return result


def _network_flags(trt: Any) -> int:
    # TensorRT 10 needs STRONGLY_TYPED; 11 and RTX accept it (11 ignores it, being always strongly typed).
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if strongly_typed is None else 1 << int(strongly_typed)


def new_network(flavor: TensorRTFlavor) -> tuple[Any, Any]:
    """(builder, empty strongly typed network) with the flavor's process-wide logger."""
    trt = flavor.module()
    builder = trt.Builder(flavor_logger(flavor))
    network = builder.create_network(_network_flags(trt))
    return builder, network


def parse_onnx(flavor: TensorRTFlavor, onnx_bytes: bytes, source: str = "ONNX model") -> ParsedNetwork:
    """ONNX bytes -> a strongly typed network; :class:`OnnxParseError` lists the parser's errors."""
    trt = flavor.module()
    builder, network = new_network(flavor)
    parser = trt.OnnxParser(network, flavor_logger(flavor))
    if not parser.parse(onnx_bytes):
        problems = []
        for index in range(parser.num_errors):
            error = parser.get_error(index)
            where = f" at node {error.node()} ({error.node_operator()})" if error.node() >= 0 else ""
            problems.append(f"{error.code().name}{where}: {error.desc()}")
        raise OnnxParseError(f"{source} ({len(onnx_bytes)} bytes): {flavor.title}'s ONNX parser rejected it: "
                             + ("; ".join(problems) or "no error recorded"))
    if network.num_inputs == 0 or network.num_outputs == 0:  # e.g. bytes that happen to decode as protobuf
        raise OnnxParseError(f"{source} ({len(onnx_bytes)} bytes): parsed to a network with {network.num_inputs} "
                             f"input(s) and {network.num_outputs} output(s); not an ONNX model of a network")
    return ParsedNetwork(flavor, builder, network, parser)


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    """What one build uses, resolved from a config, a batch size and a device."""

    profile_shapes: Mapping[str, tuple[tuple[int, ...], ...]] | None  # input name -> (min, opt, max) shapes
    compute_capabilities: tuple[str, ...]  # RTX targets; () = library default
    optimization_level: int | None
    tf32: bool | None  # None: library default
    timing_cache_path: Any = None  # Path of the persisted timing cache (full TensorRT) or None


def _trt_dtypes(trt: Any) -> dict[str, Any]:
    return {"fp32": trt.DataType.FLOAT, "fp16": trt.DataType.HALF, "bf16": trt.DataType.BF16}


def supported_compute_capabilities(flavor: TensorRTFlavor) -> tuple[str, ...]:
    """Capabilities an RTX build can target (its ``ComputeCapability`` enum), e.g. ('7.5', '8.0', ...)."""
    trt = flavor.module()
    members = [name for name in trt.ComputeCapability.__members__ if re.fullmatch(r"SM\d+", name)]
    return tuple(sorted((_capability_text(m) for m in members), key=lambda c: tuple(map(int, c.split(".")))))


def _apply_settings(flavor: TensorRTFlavor, builder: Any, builder_config: Any, settings: BuildSettings) -> None:
    trt = flavor.module()
    # DETAILED keeps layer names and types in the engine, for the inspector's layer/precision counts.
    builder_config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if settings.optimization_level is not None:
        builder_config.builder_optimization_level = settings.optimization_level
    if settings.tf32 is not None:
        (builder_config.set_flag if settings.tf32 else builder_config.clear_flag)(trt.BuilderFlag.TF32)
    if settings.profile_shapes:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in settings.profile_shapes.items():
            profile.set_shape(name, low, opt, high)
        builder_config.add_optimization_profile(profile)
    if settings.compute_capabilities:
        builder_config.num_compute_capabilities = len(settings.compute_capabilities)
        for index, capability in enumerate(settings.compute_capabilities):
            member = getattr(trt.ComputeCapability, "SM" + capability.replace(".", ""), None)
            if member is None:
                raise InputError(f"compute capability {capability}: {flavor.title} {flavor.version()} cannot "
                                 f"target it; choose from {', '.join(supported_compute_capabilities(flavor))}")
            if not builder_config.set_compute_capability(member, index):
                raise EngineBuildError(f"{flavor.name}: set_compute_capability({capability}) was refused")


def _load_timing_cache(builder_config: Any, path: Any) -> None:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    timing_cache = builder_config.create_timing_cache(data)
    if timing_cache is None and data:  # TensorRT rejected the file (other version or corrupt): start afresh
        _log.warning("timing cache %s unusable; starting an empty one", path)
        timing_cache = builder_config.create_timing_cache(b"")
    builder_config.set_timing_cache(timing_cache, False)


def build_serialized_engine(parsed: ParsedNetwork, settings: BuildSettings,
                            progress: BuildProgress | None = None) -> bytes:
    """Network + settings -> serialized engine bytes; :class:`EngineBuildError` with TensorRT's log."""
    flavor, builder = parsed.flavor, parsed.builder
    builder_config = builder.create_builder_config()
    _apply_settings(flavor, builder, builder_config, settings)
    monitor = None
    if progress is not None and hasattr(builder_config, "progress_monitor"):  # TensorRT >= 9 and RTX
        monitor = _monitor_class(flavor)(progress)  # TensorRT keeps a raw pointer: hold it in this frame
        builder_config.progress_monitor = monitor
    if settings.timing_cache_path is not None:
        _load_timing_cache(builder_config, settings.timing_cache_path)
    with flavor_logger(flavor).relay.capture() as messages:
        serialized = parsed.builder.build_serialized_network(parsed.network, builder_config)
    if serialized is None:
        raise EngineBuildError(f"{flavor.name}: build_serialized_network failed: {_errors_text(messages)}")
    if settings.timing_cache_path is not None:
        timing_cache = builder_config.get_timing_cache()
        write_bytes_atomic(settings.timing_cache_path, timing_cache.serialize())
    return bytes(serialized)


# -- build targets and the cached get-or-build --------------------------------------------------


def gpu_target(device: str) -> dict[str, str]:
    """GPU name and compute capability of ``device``: the build target of GPU-built engines."""
    props = torch.cuda.get_device_properties(torch.device(device).index or 0)
    return {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}


def resolve_settings(flavor: TensorRTFlavor, config: TensorRTConfig, batch_size: int, device: str,
                     cache: EngineCache) -> tuple[BuildSettings, dict[str, Any], dict[str, Any]]:
    """(build settings, shapes for the key, target for the key) of one engine."""
    on_gpu = environment.is_cuda(device)
    if not on_gpu and not flavor.builds_without_gpu:
        raise BackendUnavailable(f"{flavor.name}: {flavor.title} builds engines on a CUDA GPU; device is {device}")
    if config.dynamic_batch:
        if not config.min_batch <= batch_size <= config.max_batch:
            raise InputError(f"{flavor.name}: batch size {batch_size} is outside the dynamic profile "
                             f"[{config.min_batch}, {config.max_batch}] ([tool.perfsuite.tensorrt])")
        low, opt, high = ((n, *IMAGE_SHAPE) for n in (config.min_batch, config.opt_batch, config.max_batch))
        profile = {INPUT_NAME: (low, opt, high)}
        shapes = {INPUT_NAME: {"min": low, "opt": opt, "max": high}}
    else:
        profile = None
        shapes = {INPUT_NAME: (batch_size, *IMAGE_SHAPE)}
    version = flavor.version()
    if flavor.builds_without_gpu:
        capabilities = config.compute_capabilities
        if not capabilities and on_gpu:
            own = gpu_target(device)["compute_capability"]
            capabilities = (own,) if own in supported_compute_capabilities(flavor) else ()
        target: dict[str, Any] = {"compute_capabilities": list(capabilities) or "library default"}
    else:
        capabilities = ()
        target = gpu_target(device)
    tf32 = config.tf32
    if tf32 is None and on_gpu:
        tf32 = environment.tf32_in_effect(device)
    timing_path = None
    if flavor.timing_cache and config.timing_cache:
        timing_path = cache.timing_cache_path(f"{flavor.name}-{version}-{target.get('gpu')}-"
                                              f"{target.get('compute_capability')}")
    settings = BuildSettings(profile_shapes=profile, compute_capabilities=capabilities,
                             optimization_level=config.optimization_level, tf32=tf32,
                             timing_cache_path=timing_path)
    return settings, shapes, target


def get_engine(flavor: TensorRTFlavor, model: LoadedModel, precision: str, batch_size: int,
               config: TensorRTConfig, device: str, cache: EngineCache | None = None,
               progress_stream: TextIO | None = None) -> CachedEngine:
    """The engine of ``model`` at ``precision``: from the cache, or exported, parsed and built now.

    A fresh build's facts go into the entry's ``notes`` (kept in the cache): ``engine_build_s``
    (the TensorRT build alone), ``export`` (the ONNX export's describe()) and ``progress`` (the
    progress monitor's event counts).
    """
    cache = cache if cache is not None else EngineCache()
    settings, shapes, target = resolve_settings(flavor, config, batch_size, device, cache)
    key = EngineKey(
        backend=flavor.name, flavor=flavor.name, library_version=flavor.version(), model=model.name,
        model_fingerprint=model.fingerprint, target=target, precision=precision, shapes=shapes,
        options={"strongly_typed": True, "optimization_level": config.optimization_level, "tf32": settings.tf32,
                 "profiling_verbosity": "DETAILED", "onnx": {"exporter": EXPORTER, "opset": OPSET}},
    )
    progress = BuildProgress(f"{flavor.name} {model.name} {precision}", stream=progress_stream)

    def build() -> Built:
        export = export_onnx(model, precision, None if config.dynamic_batch else batch_size)
        parsed = parse_onnx(flavor, export.model_bytes, source=f"ONNX export of {model.name} {precision}")
        _check_inputs(parsed, precision, shapes)
        started = time.perf_counter()
        data = build_serialized_engine(parsed, settings, progress)
        return Built(data, {"engine_build_s": time.perf_counter() - started, "export": export.describe(),
                            "progress": progress.as_dict()})

    return cache.get_or_build(key, build)


def _check_inputs(parsed: ParsedNetwork, precision: str, shapes: Mapping[str, Any]) -> None:
    """The parsed network must have the input the key describes, in the precision's dtype."""
    trt = parsed.flavor.module()
    inputs = parsed.inputs()
    names = [name for name, _, _ in inputs]
    if names != list(shapes):
        raise EngineBuildError(f"{parsed.flavor.name}: network inputs {names}, expected {list(shapes)}")
    for name, shape, dtype in inputs:
        expected = _trt_dtypes(trt)[precision]
        if dtype != expected:
            raise EngineBuildError(f"{parsed.flavor.name}: input {name} is {dtype.name}, expected {expected.name} "
                                   f"for {precision} (precision comes from the ONNX dtypes)")
        wanted = shapes[name]
        reference = wanted["max"] if isinstance(wanted, Mapping) else wanted
        if len(shape) != len(reference) or any(d not in (-1, r) for d, r in zip(shape, reference)):
            raise EngineBuildError(f"{parsed.flavor.name}: input {name} has shape {shape}, expected {wanted}")
        if isinstance(wanted, Mapping) == (-1 not in shape):
            kind = "a dynamic batch" if isinstance(wanted, Mapping) else "a static shape"
            raise EngineBuildError(f"{parsed.flavor.name}: input {name} has shape {shape}; expected {kind}")


# -- a tiny engine: the runtime probe, and the cache tests ------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProbeEngine:
    """A small real engine: y = relu(...relu(x @ W1)... @ Wn), x of shape (1, width)."""

    data: bytes
    weights: tuple[np.ndarray, ...]

    def reference(self, x: np.ndarray) -> np.ndarray:
        for weight in self.weights:
            x = np.maximum(x @ weight, 0.0)
        return x


def build_probe_engine(flavor: TensorRTFlavor, width: int = 64, depth: int = 2, seed: int = 0,
                       compute_capabilities: tuple[str, ...] = ()) -> ProbeEngine:
    """Build (through the network API, no ONNX) a tiny fp32 engine; ~0.1 s, ~0.6 MB."""
    trt = flavor.module()
    builder, network = new_network(flavor)
    itensor = network.add_input("x", trt.DataType.FLOAT, (1, width))
    random = np.random.RandomState(seed)
    weights = tuple((random.random_sample((width, width)).astype(np.float32) - 0.5) / width**0.5
                    for _ in range(depth))
    for weight in weights:
        constant = network.add_constant((width, width), trt.Weights(weight))
        product = network.add_matrix_multiply(itensor, trt.MatrixOperation.NONE, constant.get_output(0),
                                              trt.MatrixOperation.NONE)
        layer = network.add_activation(product.get_output(0), trt.ActivationType.RELU)
        itensor = layer.get_output(0)
    network.mark_output(itensor)
    parsed = ParsedNetwork(flavor, builder, network, parser=None)
    settings = BuildSettings(profile_shapes=None, compute_capabilities=compute_capabilities, optimization_level=None,
                             tf32=False)
    return ProbeEngine(build_serialized_engine(parsed, settings), weights)


# -- runtime ----------------------------------------------------------------------------------------


def deserialize_engine(flavor: TensorRTFlavor, data: bytes) -> tuple[Any, Any]:
    """(runtime, engine); the runtime must outlive the engine. :class:`EngineLoadError` with the log."""
    trt = flavor.module()
    runtime = trt.Runtime(flavor_logger(flavor))
    with flavor_logger(flavor).relay.capture() as messages:
        engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise EngineLoadError(f"{flavor.name}: deserialize_cuda_engine returned no engine ({len(data)} bytes): "
                              f"{_errors_text(messages)}")
    return runtime, engine


class EngineSession:
    """One deserialized engine and an execution context; I/O bound by tensor name to torch tensors."""

    def __init__(self, flavor: TensorRTFlavor, data: bytes) -> None:
        trt = flavor.module()
        self.flavor = flavor
        self._runtime, self._engine = deserialize_engine(flavor, data)
        with flavor_logger(flavor).relay.capture() as messages:
            self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineLoadError(f"{flavor.name}: create_execution_context failed: {_errors_text(messages)}")
        torch_dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                        trt.DataType.BF16: torch.bfloat16, trt.DataType.INT8: torch.int8,
                        trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64,
                        trt.DataType.BOOL: torch.bool, trt.DataType.UINT8: torch.uint8}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.dtypes: dict[str, torch.dtype] = {}
        for index in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(index)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
            self.dtypes[name] = torch_dtypes[self._engine.get_tensor_dtype(name)]
        self._shapes: dict[str, tuple[int, ...]] = {}

    def run(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Enqueue one inference on torch's current stream; returns the outputs (not synchronized)."""
        if len(tensors) != len(self.inputs):
            raise InputError(f"{self.flavor.name}: engine takes {len(self.inputs)} input(s), got {len(tensors)}")
        for name, tensor in zip(self.inputs, tensors):
            shape = tuple(tensor.shape)
            if self._shapes.get(name) != shape:  # checks off the hot path: first call and shape changes
                if tensor.dtype != self.dtypes[name] or not tensor.is_cuda or not tensor.is_contiguous():
                    raise InputError(f"{self.flavor.name}: input {name} must be a contiguous CUDA "
                                     f"{self.dtypes[name]} tensor, got {tensor.dtype} on {tensor.device}")
                if not self._context.set_input_shape(name, shape):
                    raise InputError(f"{self.flavor.name}: input {name} shape {shape} is outside the engine's "
                                     f"profile")
                self._shapes[name] = shape
            self._context.set_tensor_address(name, tensor.data_ptr())
        device = tensors[0].device
        outputs = []
        for name in self.outputs:
            output = torch.empty(tuple(self._context.get_tensor_shape(name)), dtype=self.dtypes[name],
                                 device=device)
            self._context.set_tensor_address(name, output.data_ptr())
            outputs.append(output)
        if not self._context.execute_async_v3(torch.cuda.current_stream(device).cuda_stream):
            raise RuntimeError(f"{self.flavor.name}: execute_async_v3 failed")
        return outputs

    def describe(self) -> dict[str, Any]:
        return engine_facts(self.flavor.module(), self._engine)

    def release(self) -> None:
        self._context = self._engine = self._runtime = None


def engine_facts(trt: Any, engine: Any) -> dict[str, Any]:
    """Layer count, and layer types and precisions from the engine inspector, of a deserialized engine."""
    facts: dict[str, Any] = {"engine_layers": engine.num_layers}
    try:
        inspector = engine.create_engine_inspector()
        facts.update(summarize_engine_information(inspector.get_engine_information(trt.LayerInformationFormat.JSON)))
    except Exception as exc:  # the inspector is a nice-to-have: report why it gave nothing
        facts["inspector_error"] = f"{type(exc).__name__}: {exc}"
    return facts


_DTYPE_WORDS = {"fp32": "FP32", "float": "FP32", "fp16": "FP16", "half": "FP16", "bf16": "BF16",
                "bfloat16": "BF16", "fp8": "FP8", "int8": "INT8", "int32": "INT32", "int64": "INT64",
                "bool": "BOOL", "uint8": "UINT8"}
_DTYPE_PATTERN = re.compile(r"\b(" + "|".join(_DTYPE_WORDS) + r")\b", re.IGNORECASE)


def summarize_engine_information(text: str) -> dict[str, Any]:
    """Engine inspector JSON -> layer count, layer types and the precision of each layer's output.

    TensorRT 10 writes an output's type in ``"Format/Datatype"`` ("Row major linear FP16 format");
    TensorRT 11 splits it into ``"Format"`` and ``"DataType"`` ("Half"). Layers are plain names
    unless the engine was built with DETAILED profiling verbosity.
    """
    info = json.loads(text)
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    precisions: dict[str, int] = {}
    types: dict[str, int] = {}
    for entry in layers:
        if not isinstance(entry, dict):
            continue
        layer_type = str(entry.get("LayerType", "unknown"))
        types[layer_type] = types.get(layer_type, 0) + 1
        outputs = entry.get("Outputs") or []
        if outputs and isinstance(outputs[0], dict):
            described = " ".join(str(outputs[0].get(k, "")) for k in ("DataType", "Format/Datatype", "Format"))
            match = _DTYPE_PATTERN.search(described)
            if match:
                word = _DTYPE_WORDS[match.group(1).lower()]
                precisions[word] = precisions.get(word, 0) + 1
    return {"inspector_layers": len(layers), "layer_precisions": precisions or None, "layer_types": types or None}


# -- the runtime probe -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RuntimeProbe:
    """The outcome of building, deserializing and running a tiny engine on one GPU."""

    flavor: str
    title: str
    version: str
    gpu: str
    compute_capability: str
    ok: bool
    step: str  # the call that failed (or "execute_async_v3" when all passed)
    log: tuple[str, ...]
    supported: tuple[str, ...]  # what an RTX build can target; () for full TensorRT
    detail: str = ""

    @property
    def reason(self) -> str | None:
        if self.ok:
            return None
        # The runtime's own message (in the log) lists what it runs on; the builder's enum can differ
        # (it also lists targets the runtime of this version refuses), so label it as what it is.
        supported = (f"; {self.title} {self.version} builds engines for compute capabilities "
                     f"{', '.join(self.supported)}" if self.supported else "")
        return (f"{self.flavor}: the {self.title} {self.version} runtime cannot run on {self.gpu} (compute capability "
                f"{self.compute_capability}): {self.step} failed{self.detail}; TensorRT logged: "
                f"{_errors_text(list(self.log))}{supported}")


@functools.cache
def probe_runtime(flavor: TensorRTFlavor, device: str) -> RuntimeProbe:
    """Build a tiny engine, deserialize it on GPU ``device`` and run it once (cached per process)."""
    with torch.cuda.device(torch.device(device)):
        return run_probe(flavor, gpu_target(device), device)


def run_probe(flavor: TensorRTFlavor, target: Mapping[str, str], device: str) -> RuntimeProbe:
    """The probe's steps on ``device``, for the GPU ``target`` describes. Without a GPU the
    deserialization fails (no CUDA), which lets the tests exercise the failure path on a CPU."""
    supported = supported_compute_capabilities(flavor) if flavor.builds_without_gpu else ()
    own = target["compute_capability"]
    capabilities = (own,) if own in supported else ()
    common = {"flavor": flavor.name, "title": flavor.title, "version": flavor.version(), "gpu": target["gpu"],
              "compute_capability": own, "supported": supported}
    step = "build_serialized_network"
    with flavor_logger(flavor).relay.capture() as messages:
        try:
            probe = build_probe_engine(flavor, compute_capabilities=capabilities)
            step = "deserialize_cuda_engine"
            session = EngineSession(flavor, probe.data)
            step = "execute_async_v3"
            x = np.random.RandomState(1).random_sample((1, 64)).astype(np.float32)
            (output,) = session.run(torch.from_numpy(x).to(device))
            environment.synchronize(device)
        except EngineLoadError as exc:
            step = "create_execution_context" if "create_execution_context" in str(exc) else step
            return RuntimeProbe(ok=False, step=step, log=tuple(messages), **common)
        except (BackendUnavailable, RuntimeError) as exc:
            return RuntimeProbe(ok=False, step=step, log=tuple(messages), detail=f" ({exc})", **common)
    expected = probe.reference(x)
    error = float(np.abs(output.cpu().numpy() - expected).max() / max(np.abs(expected).max(), 1e-6))
    if error > 1e-3:  # fp32 without TF32: the sums' order is all that may differ
        return RuntimeProbe(ok=False, step=step, log=tuple(messages),
                            detail=f" (wrong result: relative error {error:.1e})", **common)
    return RuntimeProbe(ok=True, step=step, log=tuple(messages), **common)


# -- runners -----------------------------------------------------------------------------------------


class TensorRTRunner(Runner):
    """Full TensorRT: engines built on (and for) the GPU that runs them."""

    name = "tensorrt"
    flavor: ClassVar[TensorRTFlavor] = TENSORRT
    requires = (TENSORRT.module_name, "onnx", "onnxscript")
    extra = TENSORRT.extra
    config_class = TensorRTConfig
    config: TensorRTConfig

    def __init__(self, model: LoadedModel, spec: RunSpec, config: TensorRTConfig | None = None) -> None:
        super().__init__(model, spec, config if config is not None else TensorRTConfig.from_suite())
        self.artifact: CachedEngine | None = None
        self._session: EngineSession | None = None
        self._engine_facts: dict[str, Any] = {}

    @classmethod
    def _device_reason(cls, spec: RunSpec) -> str | None:
        flavor = cls.flavor
        if not environment.is_cuda(spec.device):
            how = ("its engines still build here without a GPU, see docs/tensorrt.md" if flavor.builds_without_gpu
                   else "its engines are built on the GPU that runs them")
            return f"{flavor.name}: {flavor.title} runs inference only on a CUDA GPU; device is {spec.device}; {how}"
        trt = flavor.module()
        if not (hasattr(trt.ICudaEngine, "num_io_tensors") and hasattr(trt.IExecutionContext, "execute_async_v3")):
            return (f"{flavor.name}: {flavor.title} {flavor.version()} lacks the name-based I/O API "
                    "(num_io_tensors, execute_async_v3); install TensorRT 10 or newer")
        return probe_runtime(flavor, spec.device).reason

    def _build(self) -> None:
        self.artifact = get_engine(self.flavor, self.model, self.spec.precision, self.spec.batch_size,
                                   self.config, self.spec.device)

    def _load(self) -> None:
        assert self.artifact is not None
        with torch.cuda.device(torch.device(self.spec.device)):
            try:
                self._session = EngineSession(self.flavor, self.artifact.data)
            except EngineLoadError as exc:
                if not self.artifact.hit:
                    raise
                # A cached engine the runtime rejects (e.g. after a driver change): rebuild it once.
                EngineCache().invalidate(self.artifact.key, f"the runtime rejected it ({exc})")
                self._build()
                self._session = EngineSession(self.flavor, self.artifact.data)
        self._engine_facts = {}
        self.artifact = self.artifact.without_data()  # the engine lives on the GPU now

    def infer(self, prepared: torch.Tensor) -> torch.Tensor:
        return self._session.run(prepared)[0]

    def _release(self) -> None:
        if self._session is not None:
            self._session.release()
        self._session = None

    def metrics(self) -> dict[str, Any]:
        facts: dict[str, Any] = {**super().metrics(), "tensorrt_flavor": self.flavor.name}
        artifact = self.artifact
        if artifact is not None:
            notes = artifact.notes
            facts.update(artifact.describe())
            facts.update({
                "engine_bytes": artifact.size,
                "engine_build_s": notes.get("engine_build_s"),
                "engine_shapes": artifact.key.as_dict()["shapes"],
                "tf32": artifact.key.options.get("tf32"),
                "dynamic_batch": self.config.dynamic_batch,
                "build_progress_events": (notes.get("progress") or {}).get("events"),
            })
            # the same export facts the onnxruntime backend reports (exporter, opset, onnx_bytes, export_s)
            facts.update({k: v for k, v in (notes.get("export") or {}).items() if k != "dynamic_batch"})
        if self._session is not None and not self._engine_facts:  # after load, outside its timing
            self._engine_facts = self._session.describe()
        facts.update(self._engine_facts)
        return facts


class TensorRTRtxRunner(TensorRTRunner):
    """TensorRT-RTX: the same path; engines target compute capabilities, built with or without a GPU."""

    name = "tensorrt-rtx"
    flavor = TENSORRT_RTX
    requires = (TENSORRT_RTX.module_name, "onnx", "onnxscript")
    extra = TENSORRT_RTX.extra


class ConvertedModuleRunner(Runner):
    """Base of converters whose result is a torch module running TensorRT engines (torch2trt,
    Torch-TensorRT): install checks that say how to install, GPU only, the converted artifact kept
    in the engine cache. Subclasses give ``_key``, ``_convert`` and ``_load`` (setting ``_module``)."""

    requires = ()  # checked in unavailable_reason, with how to install
    needs: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""

    @classmethod
    def unavailable_reason(cls, spec: RunSpec) -> str | None:
        missing = missing_modules(*cls.needs)
        if missing:
            return f"{cls.name}: {', '.join(missing)} not installed; {cls.install}"
        return super().unavailable_reason(spec)

    @classmethod
    def _device_reason(cls, spec: RunSpec) -> str | None:
        if not environment.is_cuda(spec.device):
            return f"{cls.name}: converts and runs on a CUDA GPU only; device is {spec.device}"
        return cls._gpu_reason(spec)

    @classmethod
    def _gpu_reason(cls, spec: RunSpec) -> str | None:
        return None

    def _key(self) -> EngineKey:
        raise NotImplementedError

    def _convert(self) -> Built:
        raise NotImplementedError

    def _build(self) -> None:
        self.artifact: CachedEngine = EngineCache().get_or_build(self._key(), self._convert)

    def infer(self, prepared: torch.Tensor) -> torch.Tensor:
        return self._module(prepared)

    def _release(self) -> None:
        self._module = None

    def metrics(self) -> dict[str, Any]:
        facts = super().metrics()
        artifact = getattr(self, "artifact", None)
        if artifact is not None:
            facts.update(artifact.describe())
        return facts
