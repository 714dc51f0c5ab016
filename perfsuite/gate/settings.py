"""Settings of the gate: defaults, ``[tool.perfsuite.gate]`` in pyproject.toml, then options.

    [tool.perfsuite.gate]
    threshold = "5%"              # the slowdown the gate must catch: device time, and latency where a row
                                  # has no device time; each figure's MDE is held against its threshold
    host_threshold = "25%"        # the same for host-side figures (latency and host time) of rows that
                                  # also have device time: on a shared VM they carry the host's noise
    min_effect = "2.5%"           # a significant change smaller than this counts as unchanged
                                  # (default: half the threshold)
    alpha = 0.01                  # error rate of one whole gate run (Benjamini-Hochberg over all its tests)
    power = "95%"                 # power at which each row's minimum detectable effect is stated
    inconclusive = "undecided"    # what "could not tell" does: undecided (exit 3) | fail (1) | pass (0)
    memory_threshold = "10%"      # relative memory growth that counts ...
    memory_floor_mib = 64         # ... and never less than this many MiB
    cv_threshold = "2.5%"         # a benchmark whose CV exceeds this is flagged unstable
    host_contention = "10%"       # a run during which other processes used more of the CPU is left out
    statistic = "median"          # per-run statistic compared: median | mean | min
    baseline_dir = ".perfsuite-baselines"
    require_backends = []         # backends that must have results in every new run
    informational = ["model_load", "cold_start"]  # row kinds shown with verdicts that never decide the gate
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from perfsuite.config import SuiteConfig
from perfsuite.errors import InputError

STATISTICS = ("median", "mean", "min")
INCONCLUSIVE_ACTIONS = ("undecided", "fail", "pass")
FRACTIONS = ("threshold", "host_threshold", "min_effect", "alpha", "power", "memory_threshold", "cv_threshold",
             "host_contention")
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
    #: host-side figures (latency, host time) of rows that also have device time: see docs/gate.md
    host_threshold: float = 0.25
    min_effect: float | None = None  # None: threshold / 2 (host-side figures: scaled to host_threshold)
    alpha: float = 0.01
    power: float = 0.95
    inconclusive: str = "undecided"
    memory_threshold: float = 0.10
    memory_floor_bytes: int = 64 * MIB
    cv_threshold: float = 0.025
    host_contention: float = 0.10
    statistic: str = "median"
    require_backends: tuple[str, ...] = ()
    baseline_dir: str = ".perfsuite-baselines"
    #: row kinds (extra_info "kind") whose verdicts are shown but never decide the gate's outcome
    informational: tuple[str, ...] = ("model_load", "cold_start")

    def __post_init__(self) -> None:
        if self.min_effect is None:
            object.__setattr__(self, "min_effect", self.threshold / 2)
        if self.statistic not in STATISTICS:
            raise InputError(f"statistic {self.statistic!r}: choose from {', '.join(STATISTICS)}")
        if self.inconclusive not in INCONCLUSIVE_ACTIONS:
            raise InputError(f"inconclusive {self.inconclusive!r}: choose from {', '.join(INCONCLUSIVE_ACTIONS)}")
        if not 0 < self.alpha < 1:
            raise InputError(f"alpha {self.alpha}: must lie strictly between 0 and 1")
        if not 0.5 <= self.power < 1:
            raise InputError(f"power {self.power}: must lie in [50%, 100%)")
        if self.threshold <= 0:
            raise InputError(f"threshold {self.threshold:.1%}: must be above 0")
        if self.host_threshold <= 0:
            raise InputError(f"host_threshold {self.host_threshold:.1%}: must be above 0")
        if self.min_effect > self.threshold:
            raise InputError(f"min_effect {self.min_effect:.1%} is above threshold {self.threshold:.1%}: a change "
                             "of threshold size could then never be called")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def min_effect_for(self, threshold: float) -> float:
        """A figure's min_effect: ``min_effect`` scaled from ``threshold`` to the figure's own threshold."""
        return self.min_effect * threshold / self.threshold


def settings_from_config(config: SuiteConfig | None, overrides: Mapping[str, Any] | None = None) -> GateSettings:
    """Defaults, then ``[tool.perfsuite.gate]``, then ``overrides`` (options given on the command line)."""
    section = dict((config.extra.get("gate") if config else None) or {})
    given = {k: v for k, v in (overrides or {}).items() if v is not None}  # options actually on the command line
    values: dict[str, Any] = {}
    for key, value in {**section, **given}.items():
        source = f"--{key.replace('_', '-')}" if key in given else f"[tool.perfsuite.gate] {key}"
        if key in FRACTIONS:
            values[key] = parse_fraction(value, source)
        elif key == "memory_floor_mib":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise InputError(f"{source}: {value!r} is not a number of MiB")
            try:
                values["memory_floor_bytes"] = int(float(value) * MIB)
            except ValueError as exc:
                raise InputError(f"{source}: {value!r} is not a number of MiB") from exc
        elif key in ("require_backends", "informational"):
            what = "backend names" if key == "require_backends" else "row kinds (e.g. model_load, cold_start)"
            if not isinstance(value, (str, list, tuple)) or (not isinstance(value, str)
                                                             and not all(isinstance(item, str) for item in value)):
                raise InputError(f"{source}: {value!r} is not a list of {what}")
            items = value.split(",") if isinstance(value, str) else list(value)
            values[key] = tuple(item.strip() for item in items if item.strip())
            if key == "informational" and values[key] == ("none",):  # every row decides
                values[key] = ()
            elif key in given and not values[key]:  # an empty option would silently drop the configured value
                alternative = " (or none)" if key == "informational" else ""
                raise InputError(f"{source} {value!r}: names nothing; give at least one of the {what}{alternative}, "
                                 f"or leave the option out for [tool.perfsuite.gate] {key}")
        elif key in ("statistic", "baseline_dir", "inconclusive"):
            if not isinstance(value, str):
                raise InputError(f"{source}: {value!r} is not a string")
            if key == "inconclusive" and value not in INCONCLUSIVE_ACTIONS:
                raise InputError(f"{source}: {value!r}: choose from {', '.join(INCONCLUSIVE_ACTIONS)}")
            values[key] = value
        else:
            known = ", ".join([*FRACTIONS, "memory_floor_mib", "statistic", "inconclusive", "baseline_dir",
                               "require_backends", "informational"])
            raise InputError(f"{source}: unknown setting; known: {known}")
    return GateSettings(**values)
