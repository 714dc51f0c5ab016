"""What torch2trt and Torch-TensorRT share: a converter whose result is a torch module running TensorRT
engines, made on the GPU and kept in the engine cache (``perfsuite.engine_cache``).

Subclasses give ``needs`` and ``install`` (checked first, so a missing converter says how to install
it), ``_key`` and ``_convert`` (the cache key and the conversion), and ``_load`` (setting ``_module``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from perfsuite import environment
from perfsuite.backends.base import Runner, RunSpec, missing_modules
from perfsuite.engine_cache import ArtifactKey, Built, CachedArtifact, EngineCache, conversion_facts


class ConvertedModuleRunner(Runner):
    requires = ()  # checked in unavailable_reason, with how to install
    needs: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""
    artifact: CachedArtifact | None = None
    _module: Any = None

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

    def _key(self) -> ArtifactKey:
        raise NotImplementedError

    def _convert(self) -> Built:
        raise NotImplementedError

    def _build(self) -> None:
        self.artifact = EngineCache().get_or_build(self._key(), self._convert)

    def infer(self, prepared: torch.Tensor) -> torch.Tensor:
        # torch2trt's TRTModule puts its outputs and stream on the current device, not the input's
        with torch.cuda.device(prepared.device):
            return self._module(prepared)

    def _release(self) -> None:
        self._module = None

    def metrics(self) -> dict[str, Any]:
        facts = super().metrics()
        if self.artifact is not None:
            facts.update({**conversion_facts(self.artifact), "artifact_bytes": self.artifact.size,
                          "engine_target": dict(self.artifact.key.target),
                          "library_version": self.artifact.key.library_version})
        return facts
