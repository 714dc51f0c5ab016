"""Thresholds of the gate: defaults, ``[tool.perfsuite.gate]`` in pyproject.toml, then options.

    [tool.perfsuite.gate]
    threshold = "5%"              # smallest median change that counts (effect size)
    alpha = 0.05                  # one-sided significance of the Mann-Whitney U test over runs
    single_run_threshold = "15%"  # effect needed when a side has too few runs for the test
                                  # (default: 3 x threshold)
    memory_threshold = "10%"      # relative memory growth that counts ...
    memory_floor_mib = 64         # ... and never less than this many MiB
    cv_threshold = "2.5%"         # a benchmark whose CV exceeds this is flagged unstable
    host_contention = "10%"       # a run during which other processes used more of the CPU is left out
    statistic = "median"          # per-run statistic compared: median | mean | min
    baseline_dir = ".perfsuite-baselines"
    require_backends = []         # backends that must have results in every new run
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from perfsuite.config import SuiteConfig
from perfsuite.errors import InputError

STATISTICS = ("median", "mean", "min")
MIB = 1024 * 1024


def parse_fraction(value: Any, source: str) -> float:
    """'5%', '0.05' or 0.05 -> 0.05; must lie in [0, 10]."""
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise InputError(f"{source}: {value!r} is not a fraction or a percentage (e.g. 0.05 or 5%)") from None
    if not 0 <= number <= 10:
        raise InputError(f"{source}: {value!r} is out of range (0 to 1000%)")
    return number


@dataclasses.dataclass(frozen=True)
class GateSettings:
    """Everything that decides a verdict; recorded with every gate result."""

    threshold: float = 0.05
    alpha: float = 0.05
    single_run_threshold: float | None = None  # None: 3 x threshold (15% by default)
    memory_threshold: float = 0.10
    memory_floor_bytes: int = 64 * MIB
    cv_threshold: float = 0.025
    host_contention: float = 0.10
    statistic: str = "median"
    fail_on_inconclusive: bool = False
    require_backends: tuple[str, ...] = ()
    baseline_dir: str = ".perfsuite-baselines"

    def __post_init__(self) -> None:
        if self.single_run_threshold is None:
            object.__setattr__(self, "single_run_threshold", 3 * self.threshold)
        if self.statistic not in STATISTICS:
            raise InputError(f"statistic {self.statistic!r}: choose from {', '.join(STATISTICS)}")
        if not 0 < self.alpha < 1:
            raise InputError(f"alpha {self.alpha}: must lie strictly between 0 and 1")
        if self.single_run_threshold < self.threshold:
            raise InputError(f"single_run_threshold {self.single_run_threshold:.1%} is below threshold "
                             f"{self.threshold:.1%}; with fewer runs the gate needs a larger effect, not a smaller one")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def settings_from_config(config: SuiteConfig | None, overrides: Mapping[str, Any] | None = None) -> GateSettings:
    """Defaults, then ``[tool.perfsuite.gate]``, then ``overrides`` (options given on the command line)."""
    section = dict((config.extra.get("gate") if config else None) or {})
    given = {k: v for k, v in (overrides or {}).items() if v is not None}  # options actually on the command line
    values: dict[str, Any] = {}
    for key, value in {**section, **given}.items():
        source = f"--{key.replace('_', '-')}" if key in given else f"[tool.perfsuite.gate] {key}"
        if key in ("threshold", "alpha", "single_run_threshold", "memory_threshold", "cv_threshold",
                   "host_contention"):
            values[key] = parse_fraction(value, source)
        elif key == "memory_floor_mib":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise InputError(f"{source}: {value!r} is not a number of MiB")
            try:
                values["memory_floor_bytes"] = int(float(value) * MIB)
            except ValueError as exc:
                raise InputError(f"{source}: {value!r} is not a number of MiB") from exc
        elif key == "require_backends":
            if not isinstance(value, (str, list, tuple)):
                raise InputError(f"{source}: {value!r} is not a list of backend names")
            items = value.split(",") if isinstance(value, str) else list(value)
            values[key] = tuple(str(item).strip() for item in items if str(item).strip())
        elif key in ("statistic", "baseline_dir"):
            values[key] = str(value)
        elif key == "fail_on_inconclusive":
            if not isinstance(value, bool):  # bool("false") is True: accept only a real boolean
                raise InputError(f"{source}: {value!r} is not true or false")
            values[key] = value
        else:
            known = "threshold, alpha, single_run_threshold, memory_threshold, memory_floor_mib, cv_threshold, " \
                    "host_contention, statistic, baseline_dir, require_backends, fail_on_inconclusive"
            raise InputError(f"{source}: unknown setting; known: {known}")
    return GateSettings(**values)
