"""Suite defaults from ``[tool.perfsuite]`` in pyproject.toml.

Reading the file is the only side effect, and it happens in :func:`load_suite_config`, never when
a config object is created.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from perfsuite.errors import InputError

PRECISIONS = ("fp32", "fp16", "bf16")
# Sub-tables of [tool.perfsuite] that other modules read (tolerances, the regression gate, TensorRT builds).
SUBTABLES = ("tolerances", "gate", "tensorrt")


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """Defaults of a suite run; the pytest options and the CLI override them."""

    model: str = "alexnet"
    weights: str = "auto"
    backends: tuple[str, ...] = ("eager", "onnxruntime")
    precisions: tuple[str, ...] = PRECISIONS
    batch_sizes_gpu: tuple[int, ...] = (1, 8, 64, 256)
    batch_sizes_cpu: tuple[int, ...] = (1, 8)
    warmup_rounds: int = 10
    cache_dir: str = ".perfsuite-cache"
    # Free-form sections later features read (e.g. [tool.perfsuite.tolerances]).
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def batch_sizes(self, device: str) -> tuple[int, ...]:
        return self.batch_sizes_gpu if device.startswith("cuda") else self.batch_sizes_cpu


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` (default: the working directory)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_suite_config(pyproject: Path | None = None) -> SuiteConfig:
    """Read ``[tool.perfsuite]``; a missing file or section gives the defaults."""
    path = pyproject if pyproject is not None else find_pyproject()
    if path is None:
        return SuiteConfig()
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from exc
    section = dict(document.get("tool", {}).get("perfsuite", {}))
    known = {f.name for f in dataclasses.fields(SuiteConfig)} - {"extra"}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in section.items():
        if key in known:
            values[key] = tuple(value) if isinstance(value, list) else value
        elif key in SUBTABLES and isinstance(value, dict):
            extra[key] = value
        else:  # a typo must not silently fall back to a default
            raise InputError(f"{path} [tool.perfsuite]: unknown key {key!r}; known: "
                             f"{', '.join(sorted(known))}, and the tables [{'], ['.join(SUBTABLES)}]")
    if "warmup_rounds" in values and (isinstance(values["warmup_rounds"], bool)
                                      or not isinstance(values["warmup_rounds"], int) or values["warmup_rounds"] < 0):
        raise InputError(f"{path} [tool.perfsuite] warmup_rounds: {values['warmup_rounds']!r} is not a whole "
                         "number >= 0")
    for key in ("batch_sizes_gpu", "batch_sizes_cpu"):
        if key in values:
            values[key] = parse_batch_sizes(values[key], source=f"{path} [tool.perfsuite] {key}")
    if "precisions" in values:
        for precision in values["precisions"]:
            check_precision(precision, source=f"{path} [tool.perfsuite] precisions")
    return SuiteConfig(**values, extra=extra)


def split_names(value: str | None) -> list[str]:
    """'eager, onnxruntime' -> ['eager', 'onnxruntime'] (comma-separated option values; empty items dropped)."""
    return [item.strip() for item in value.split(",") if item.strip()] if value else []


def check_precision(precision: str, source: str = "precision") -> str:
    if precision not in PRECISIONS:
        raise InputError(f"{source}: unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return precision


def parse_batch_sizes(value: str | int | tuple | list, source: str = "--batch-sizes") -> tuple[int, ...]:
    """'1,8,64' or [1, 8, 64] -> (1, 8, 64); every size must be a positive integer."""
    items = value.split(",") if isinstance(value, str) else list(value) if not isinstance(value, int) else [value]
    sizes = []
    for item in items:
        text = str(item).strip()
        if not text.isdigit() or int(text) < 1:
            raise InputError(f"{source}: batch size {text!r} is not a positive integer")
        sizes.append(int(text))
    if not sizes:
        raise InputError(f"{source}: no batch size given")
    return tuple(sizes)


def cache_root(config: SuiteConfig) -> Path:
    """Where engines and exports are cached: $PERFSUITE_CACHE_DIR or the configured folder."""
    return Path(os.environ.get("PERFSUITE_CACHE_DIR", config.cache_dir)).expanduser()
