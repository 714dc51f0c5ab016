"""The runner: one inference backend with an explicit lifecycle.

    runner = EagerRunner(model, RunSpec("fp16", batch_size=8, device="cuda"))
    with runner:                      # activate(): build() then load()
        out = runner.run(images)      # prepare() + infer() + to_tensor()

``build``    conversion (export, engine build); timed as ``build_seconds``.
``load``     bring the converted artifact to the device (deserialize, create a session); timed as
             ``load_seconds``.
``prepare``  put an input batch where and how ``infer`` wants it; not timed.
``infer``    the hot path that benchmarks time; it may return before the GPU is done (callers that
             time it synchronize, see ``timing``).
``release``  free what ``load`` and ``build`` took.

A runner that cannot run here says why through :meth:`Runner.unavailable_reason` (static checks:
a missing package names its pip extra) or by raising :class:`BackendUnavailable` from ``build``
or ``load`` when a real attempt shows the environment lacks something (e.g. a provider without a
kernel for the dtype). A backend that was tried and broke raises :class:`BackendError`: that fails.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib.util
import time
from typing import Any, ClassVar

import torch

from perfsuite.config import check_precision
from perfsuite.environment import device_context, is_cuda, synchronize
from perfsuite.errors import BackendUnavailable, InputError
from perfsuite.models import LoadedModel

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What a runner is asked to run: precision, batch size, device."""

    precision: str
    batch_size: int
    device: str

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"batch size {self.batch_size!r}: must be a positive integer")

    @property
    def dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.precision]

    @property
    def label(self) -> str:
        return f"{self.precision}-b{self.batch_size}-{self.device}"


@dataclasses.dataclass(frozen=True)
class BackendConfig:
    """Backend-specific options; each backend subclasses this with its own fields."""


def missing_modules(*modules: str) -> list[str]:
    """Import names among ``modules`` that are not installed (probed without importing them)."""
    missing = []
    for module in modules:
        try:
            if importlib.util.find_spec(module) is None:
                missing.append(module)
        except (ImportError, ValueError):
            missing.append(module)
    return missing


class Runner(abc.ABC):
    """Base class of every backend runner."""

    name: ClassVar[str]
    #: import names the backend needs, and the pip extra that brings them
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    config_class: ClassVar[type[BackendConfig]] = BackendConfig
    #: why this backend's device time cannot be measured on a held stream (``perfsuite.device_time``), e.g.
    #: its ``infer`` waits for the device; None: its calls only enqueue work ordered after the current
    #: stream, which a hold of that stream then covers
    device_time_unavailable: ClassVar[str | None] = None

    def __init__(self, model: LoadedModel, spec: RunSpec, config: BackendConfig | None = None) -> None:
        self.model = model
        self.spec = spec
        self.config = config if config is not None else self.config_class()
        self.build_seconds: float | None = None
        self.load_seconds: float | None = None
        self._built = self._loaded = False

    # -- availability -------------------------------------------------------------------------
    @classmethod
    def unavailable_reason(cls, spec: RunSpec) -> str | None:
        """Why this backend cannot run ``spec`` here, or None. Imports nothing heavy."""
        missing = missing_modules(*cls.requires)
        if missing:
            hint = f"pip install 'perfsuite[{cls.extra}]'" if cls.extra else "see the backend's documentation"
            return f"{cls.name}: {', '.join(missing)} not installed ({hint})"
        if is_cuda(spec.device) and not torch.cuda.is_available():
            return f"{cls.name}: no CUDA GPU visible"
        return cls._device_reason(spec)

    @classmethod
    def _device_reason(cls, spec: RunSpec) -> str | None:
        """Backend-specific device/dtype checks; override where needed."""
        return None

    @classmethod
    def expected_skip(cls, spec: RunSpec) -> str | None:
        """Why a real attempt at ``spec`` is known to skip although the static checks pass (what only building
        shows, e.g. a provider without a kernel for the dtype), or None. Said in the plan and by ``doctor``; the
        suite still tries, so the skip's own reason comes from the library."""
        return None

    # -- lifecycle ---------------------------------------------------------------------------
    def build(self) -> None:
        """Convert the model (timed). Idempotent."""
        if self._built:
            return
        reason = self.unavailable_reason(self.spec)
        if reason:
            raise BackendUnavailable(reason)
        started = time.perf_counter()
        with device_context(self.spec.device):  # libraries that build on the current device build on ours
            self._build()
        synchronize(self.spec.device)
        self.build_seconds = time.perf_counter() - started
        self._built = True

    def load(self) -> None:
        """Load the converted model onto the device (timed). Idempotent."""
        if self._loaded:
            return
        self.build()
        synchronize(self.spec.device)
        started = time.perf_counter()
        with device_context(self.spec.device):  # deserialize, create sessions, capture graphs on our device
            self._load()
        synchronize(self.spec.device)
        self.load_seconds = time.perf_counter() - started
        self._loaded = True

    def activate(self) -> Runner:
        self.load()
        return self

    def release(self) -> None:
        self._release()
        self._built = self._loaded = False

    deactivate = release

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    # -- inference ---------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor) -> Any:
        """An fp32 (N, 3, H, W) CPU batch -> the input ``infer`` takes (untimed)."""
        return images.to(self.spec.device, self.spec.dtype).contiguous()

    @abc.abstractmethod
    def infer(self, prepared: Any) -> Any:
        """The timed hot path: run the model on a prepared input."""

    def to_tensor(self, output: Any) -> torch.Tensor:
        """An ``infer`` result -> an fp32 CPU tensor of logits."""
        return output.detach().float().cpu()

    def run(self, images: torch.Tensor) -> torch.Tensor:
        """prepare + infer + to_tensor, for parity checks and predictions."""
        if not self._loaded:
            self.load()
        return self.to_tensor(self.infer(self.prepare(images)))

    def metrics(self) -> dict[str, Any]:
        """Build/load times and backend-specific facts (exporter, engine size, ...)."""
        return {"build_s": self.build_seconds, "load_s": self.load_seconds}

    @property
    def conversion_seconds(self) -> float | None:
        """What making this runner's converted model cost: for cached artifacts (exports, engines) as
        measured when they were made, so a row reports the same whatever ran before it in the
        process; otherwise this build's own time."""
        return self.metrics().get("conversion_s", self.build_seconds)

    # -- what subclasses implement -------------------------------------------------------------
    @abc.abstractmethod
    def _build(self) -> None: ...

    @abc.abstractmethod
    def _load(self) -> None: ...

    def _release(self) -> None:
        """Drop references to device objects; subclasses free what they hold."""
