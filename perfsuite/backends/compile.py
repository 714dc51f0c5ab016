"""``compile``: the model compiled by ``torch.compile`` (TorchDynamo + Inductor).

One registry name per choice, so that ``--backends`` picks it:

=====================================  =====================================================
``compile``                            mode ``default``: Inductor's fused kernels
``compile-reduce-overhead``            ``reduce-overhead``: the same kernels, replayed as CUDA graphs
``compile-max-autotune``               ``max-autotune``: benchmarks Triton templates against the
                                       libraries for every matmul and convolution, keeps the
                                       fastest, and replays CUDA graphs (about 75 s per shape on an H200)
``compile-max-autotune-channels-last``  ``max-autotune`` on NHWC activations and weights
``compile-max-autotune-cudagraph``     ``max-autotune-no-cudagraphs`` kernels captured by perfsuite
                                       in one plain CUDA graph (``cudagraph``'s replay), instead
                                       of Inductor's CUDA graph trees and their per-call Python work
=====================================  =====================================================

Conversion time is compilation time: ``torch.compile`` is lazy, so ``build`` calls the compiled
model once at the runner's batch size (``dynamic=False``: one specialization per batch size).

Caches. Inductor's on-disk caches (FX graph cache, Triton kernels, autotuning results) live in
``<cache_dir>/inductor`` (``$PERFSUITE_CACHE_DIR`` or ``[tool.perfsuite] cache_dir``), so a second
run in a new process does not recompile; every build records whether Inductor's FX graph cache
hit (``compile_cache`` "warm"), missed ("cold"), or both ("partial"). ``build`` first resets
TorchDynamo, so each runner's build is a real compilation rather than a reuse of an earlier
runner's graph; the reset also drops the compiled code of other compile runners alive in the
process, which then recompile (from the disk cache) on their next call.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from perfsuite.backends.base import RunSpec, missing_modules
from perfsuite.backends.cudagraph import CapturedGraph, CudaGraphConfig, capture_input
from perfsuite.backends.eager import EagerRunner
from perfsuite.config import cache_root, load_suite_config
from perfsuite.environment import is_cuda
from perfsuite.errors import InputError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: modes in which Inductor replays CUDA graphs on a GPU ("CUDA graph trees")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
#: (counter group, counter) -> the name recorded in metrics
_CACHE_COUNTERS = {
    ("inductor", "fxgraph_cache_hit"): "fxgraph_cache_hits",
    ("inductor", "fxgraph_cache_miss"): "fxgraph_cache_misses",
    ("aot_autograd", "autograd_cache_hit"): "aot_autograd_cache_hits",
    ("aot_autograd", "autograd_cache_miss"): "aot_autograd_cache_misses",
    ("stats", "unique_graphs"): "graphs",
}


@dataclasses.dataclass(frozen=True)
class CompileConfig(CudaGraphConfig):
    mode: str = "default"
    capture_cuda_graph: bool = False  # capture the compiled call in one torch.cuda.CUDAGraph (GPU only)

    def __post_init__(self) -> None:
        if self.mode not in COMPILE_MODES:
            raise InputError(f"torch.compile mode {self.mode!r}: choose from {', '.join(COMPILE_MODES)}")


@dataclasses.dataclass(frozen=True)
class ReduceOverheadConfig(CompileConfig):
    mode: str = "reduce-overhead"


@dataclasses.dataclass(frozen=True)
class MaxAutotuneConfig(CompileConfig):
    mode: str = "max-autotune"


@dataclasses.dataclass(frozen=True)
class MaxAutotuneChannelsLastConfig(MaxAutotuneConfig):
    channels_last: bool = True


@dataclasses.dataclass(frozen=True)
class MaxAutotuneCapturedConfig(CompileConfig):
    mode: str = "max-autotune-no-cudagraphs"
    capture_cuda_graph: bool = True


def inductor_cache_dir() -> Path:
    """The known folder of Inductor's on-disk caches: ``<perfsuite cache>/inductor``."""
    return (cache_root(load_suite_config()) / "inductor").resolve()


def use_inductor_cache(folder: Path) -> Path:
    """Point Inductor at ``folder``; its in-memory caches are cleared when the folder changes."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") != str(folder):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
        import torch._inductor.utils as inductor_utils

        inductor_utils.clear_inductor_caches()  # the name torch 2.5 through 2.14 all have
    return folder


def _cache_counters() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {name: int(counters[group][key]) for (group, key), name in _CACHE_COUNTERS.items()}


def cache_state(hits: int, misses: int) -> str:
    """'warm' (every compiled graph came from the disk cache), 'cold', 'partial', or 'unused'."""
    if hits and not misses:
        return "warm"
    if misses and not hits:
        return "cold"
    return "partial" if hits else "unused"


def _cpp_compiler() -> str | None:
    candidates = [os.environ.get("CXX"), "g++", "clang++", "c++"]
    return next((found for name in candidates if name and (found := shutil.which(name))), None)


class CompileRunner(EagerRunner):
    name = "compile"
    config_class = CompileConfig
    config: CompileConfig

    @classmethod
    def _device_reason(cls, spec: RunSpec) -> str | None:
        if is_cuda(spec.device) and missing_modules("triton"):
            return f"{cls.name}: Inductor needs triton for CUDA kernels (pip install triton)"
        if not is_cuda(spec.device) and cls.config_class().capture_cuda_graph:
            return f"{cls.name}: CUDA graphs need a CUDA GPU (--device cuda)"
        if not is_cuda(spec.device) and _cpp_compiler() is None:
            return f"{cls.name}: Inductor on the CPU needs a C++ compiler (g++ or clang++ on PATH, or $CXX)"
        return super()._device_reason(spec)

    @property
    def uses_cuda_graphs(self) -> bool:
        return is_cuda(self.spec.device) and self.config.mode in CUDA_GRAPH_MODES

    def _build(self) -> None:
        super()._build()  # the private copy in the run's dtype
        self._module = self._module.to(self.spec.device, memory_format=self._memory_format())
        self.cache_dir = use_inductor_cache(inductor_cache_dir())
        torch._dynamo.reset()
        before = _cache_counters()
        self._compiled = torch.compile(self._module, mode=self.config.mode, dynamic=False)
        example = capture_input(self.spec.batch_size, self.spec.dtype, self.spec.device, self._memory_format())
        started = time.perf_counter()
        self._call(example)  # compiles
        self.first_call_seconds = time.perf_counter() - started
        after = _cache_counters()
        self.cache_counts = {name: after[name] - before[name] for name in after}
        self._example = example

    def _load(self) -> None:
        # Already on the device. In CUDA-graph modes the second call records the graph and the
        # third is the first replay: one-time work that belongs to loading, not to inference.
        if self.uses_cuda_graphs:
            for _ in range(2):
                self._call(self._example)
        self.graph = None
        if self.config.capture_cuda_graph:
            self.graph = CapturedGraph(self._call, self.spec, self._memory_format(), self.config.warmup_calls,
                                       self.name)
        self._example = None

    def _call(self, prepared: torch.Tensor) -> torch.Tensor:
        if self.uses_cuda_graphs:
            # A new step: the previous call's outputs may be overwritten (to_tensor copied them).
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode():
            return self._compiled(prepared)

    def infer(self, prepared: torch.Tensor) -> torch.Tensor:
        return self.graph.replay(prepared) if self.graph is not None else self._call(prepared)

    def _release(self) -> None:
        self._compiled = self._example = self.graph = None
        torch._dynamo.reset()  # frees the compiled graphs and CUDA graph pools
        super()._release()

    def metrics(self) -> dict[str, Any]:
        graphs = "inductor trees" if self.uses_cuda_graphs else "perfsuite capture" if self.config.capture_cuda_graph \
            else None
        facts = {**super().metrics(), "compile_mode": self.config.mode, "dynamic_shapes": False, "cuda_graphs": graphs}
        counts = getattr(self, "cache_counts", None)
        if counts is not None:
            facts.update(counts)
            facts["compile_cache"] = cache_state(counts["fxgraph_cache_hits"], counts["fxgraph_cache_misses"])
            facts["inductor_cache_dir"] = str(self.cache_dir)
            facts["compile_s"] = self.first_call_seconds
        return facts


class ReduceOverheadRunner(CompileRunner):
    name = "compile-reduce-overhead"
    config_class = ReduceOverheadConfig


class MaxAutotuneRunner(CompileRunner):
    name = "compile-max-autotune"
    config_class = MaxAutotuneConfig


class MaxAutotuneChannelsLastRunner(CompileRunner):
    name = "compile-max-autotune-channels-last"
    config_class = MaxAutotuneChannelsLastConfig


class MaxAutotuneCapturedRunner(CompileRunner):
    name = "compile-max-autotune-cudagraph"
    config_class = MaxAutotuneCapturedConfig


def measure_compile(*, process_started: float, backend: str, model: str, weights: str, precision: str,
                    batch_size: int, device: str) -> dict[str, Any]:
    """Build one compile runner (meant for a fresh process, see ``compile_in_fresh_process``)."""
    import warnings

    from perfsuite.backends import get_runner_class
    from perfsuite.models import load_model

    imported = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the parent already reported the weights choice
        loaded = load_model(model, weights)
    runner = get_runner_class(backend)(loaded, RunSpec(precision, batch_size, device))
    runner.load()
    facts = runner.metrics()
    runner.release()
    return {**facts, "import_s": imported - process_started}


def compile_in_fresh_process(backend: str, model: str, weights: str, spec: RunSpec,
                             cache_dir: Path | None = None) -> dict[str, Any]:
    """Compile in a new interpreter (no in-memory caches), with the perfsuite cache at ``cache_dir``."""
    from perfsuite.fresh_process import run_in_fresh_process

    env = {"PERFSUITE_CACHE_DIR": str(cache_dir)} if cache_dir is not None else None
    kwargs = {"backend": backend, "model": model, "weights": weights, "precision": spec.precision,
              "batch_size": spec.batch_size, "device": spec.device}
    return run_in_fresh_process("perfsuite.backends.compile.measure_compile", kwargs, env=env)
