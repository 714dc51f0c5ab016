"""How steady one benchmark was within one run: the coefficient of variation of its samples.

CV = standard deviation / mean of the timed rounds, the figure trtexec prints as "coefficient of
variance" (it warns above 1% in TensorRT 8 and above 2.5% in TensorRT 11). The suite flags a
benchmark above ``cv_threshold`` (default 2.5%) as unstable. A flag, not a verdict: the gate
compares whole runs, and an unstable benchmark can still be compared, but the reader should know
that its samples scattered widely (a busy machine, clock changes, a noisy neighbour).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class UnstableMeasurement(UserWarning):
    """A benchmark's samples varied more than the CV threshold allows."""


def coefficient_of_variation(stats: Mapping[str, Any]) -> float | None:
    """stddev / mean of pytest-benchmark ``stats``; None with fewer than 2 rounds or a zero mean."""
    mean, stddev, rounds = stats.get("mean"), stats.get("stddev"), stats.get("rounds") or 0
    if not isinstance(mean, (int, float)) or not isinstance(stddev, (int, float)) or rounds < 2 or mean <= 0:
        return None
    value = float(stddev) / float(mean)
    return value if math.isfinite(value) else None


def stability_info(stats: Mapping[str, Any] | Any, cv_threshold: float) -> dict[str, Any]:
    """The ``stability`` field of ``extra_info``: {"cv", "cv_threshold", "unstable"}.

    ``stats`` is pytest-benchmark's stats mapping, or its ``Stats`` object (``benchmark.stats.stats``).
    """
    if not isinstance(stats, Mapping):
        stats = {name: getattr(stats, name, None) for name in ("mean", "stddev", "rounds")}
    cv = coefficient_of_variation(stats)
    return {"cv": cv, "cv_threshold": cv_threshold, "unstable": cv is not None and cv > cv_threshold}
