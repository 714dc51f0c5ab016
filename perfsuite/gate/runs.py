"""Saved runs: pytest-benchmark JSON files as they are, found by path, glob, folder or storage id.

A *side* of a comparison (baseline or new) is one or more whole runs of the suite. It is given as
a string of comma-separated items, each one of:

* a file path;
* a folder: every ``*.json`` in it (a baseline folder also has ``baseline.json``, its manifest);
* a glob (``runs/pr-*.json``; quote it so the shell leaves it alone);
* a pytest-benchmark storage id: ``0003`` or ``Linux-CPython-3.11-64bit/0003`` (a file-name prefix
  under ``--storage``, default ``.benchmarks``), as ``pytest --benchmark-compare`` takes it.

Runs in a stored baseline are read only through its verified manifest, whichever form names them
(see ``store``).
"""

from __future__ import annotations

import dataclasses
import glob
import math
import statistics
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from perfsuite.errors import InputError
from perfsuite.gate.hardware import HardwareFingerprint, fingerprint, software
from perfsuite.gate.stability import coefficient_of_variation
from perfsuite.results import load_benchmark_json

MANIFEST_NAME = "baseline.json"


@dataclasses.dataclass(frozen=True)
class BenchmarkRecord:
    """One benchmark row of one run."""

    key: str  # pytest node id (``fullname``): the same benchmark in every run
    name: str
    group: str | None
    stats: Mapping[str, Any]
    extra_info: Mapping[str, Any]

    def statistic(self, name: str) -> float:
        """The per-run value the gate compares: the median (default), mean or min of the rounds."""
        if name not in self.stats:
            raise InputError(f"benchmark {self.key}: its stats have no {name!r} (saved by another tool?); "
                             "choose another --statistic")
        return float(self.stats[name])

    @property
    def median_s(self) -> float:
        return float(self.stats["median"])

    @property
    def samples(self) -> list[float] | None:
        """Every timed round, when the file has them (``--benchmark-json`` does; autosave needs
        ``--benchmark-save-data``)."""
        data = self.stats.get("data")
        return [float(v) for v in data] if data else None

    @property
    def cv(self) -> float | None:
        return coefficient_of_variation(self.stats)

    @property
    def backend(self) -> str | None:
        return self.extra_info.get("backend")

    @property
    def kind(self) -> str | None:
        return self.extra_info.get("kind")

    @property
    def telemetry(self) -> Mapping[str, Any] | None:
        return self.extra_info.get("gpu_telemetry")

    def timing_figure(self, field: str) -> tuple[float | None, str | None]:
        """``extra_info[field]`` ("device_time" or "host_time", per call): (median seconds, None) where
        available; (None, the recorded reason) where measured as unavailable; (None, None) where the run
        did not record the field (made before perfsuite measured it)."""
        entry = self.extra_info.get(field)
        if not isinstance(entry, Mapping):
            return None, None
        value = entry.get("median_s")
        if entry.get("available") is not True:
            return None, str(entry.get("reason") or "recorded as unavailable, no reason given")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            return None, f"recorded as available but its median_s is {value!r}, not a positive number"
        return float(value), None

    @property
    def host_probe_s(self) -> float | None:
        """Median time of the host-speed probe timed between this row's rounds, None if not recorded."""
        probe = self.extra_info.get("host_probe")
        value = probe.get("median_s") if isinstance(probe, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            return None
        return float(value)


@dataclasses.dataclass(frozen=True)
class SavedRun:
    """One whole run of the suite: its machine, commit, benchmarks and recorded skips/failures."""

    path: Path
    data: Mapping[str, Any] = dataclasses.field(repr=False)

    @property
    def machine_info(self) -> Mapping[str, Any]:
        return self.data.get("machine_info") or {}

    @property
    def commit_info(self) -> Mapping[str, Any]:
        return self.data.get("commit_info") or {}

    @property
    def datetime(self) -> str | None:
        return self.data.get("datetime")

    @cached_property
    def benchmarks(self) -> dict[str, BenchmarkRecord]:
        records: dict[str, BenchmarkRecord] = {}
        for bench in self.data["benchmarks"]:
            key = bench.get("fullname") or bench["name"]
            if key in records:
                raise InputError(f"results file {self.path}: benchmark {key} appears twice")
            records[key] = BenchmarkRecord(key, bench["name"], bench.get("group"), bench["stats"],
                                           bench.get("extra_info") or {})
        return records

    @cached_property
    def outcomes(self) -> dict[str, Mapping[str, Any]]:
        """node id -> {"outcome": "skipped"|"failed", "when", "reason"} for tests that did not pass."""
        section = self.data.get("perfsuite") or {}
        # "perfsuite_skipped" ([{"nodeid", "reason"}]): the first plugin version recorded skips only
        legacy = {entry["nodeid"]: {**entry, "outcome": "skipped"} for entry in self.data.get("perfsuite_skipped", [])}
        return {**legacy, **{entry["nodeid"]: entry for entry in section.get("outcomes", [])}}

    @property
    def records_outcomes(self) -> bool:
        """Whether the run was saved by a plugin that records skips."""
        return "perfsuite" in self.data or "perfsuite_skipped" in self.data

    @cached_property
    def fingerprint(self) -> HardwareFingerprint:
        return fingerprint(self.machine_info)

    @cached_property
    def software(self) -> dict[str, Any]:
        return software(self.machine_info)

    @cached_property
    def host_speed_s(self) -> float | None:
        """The run's host speed: the median of its rows' host probes (None where no row recorded one)."""
        probes = [p for record in self.benchmarks.values() if (p := record.host_probe_s) is not None]
        return statistics.median(probes) if probes else None

    @property
    def device(self) -> str:
        section = self.machine_info.get("perfsuite")
        return str(section.get("device", "cpu")) if isinstance(section, Mapping) else "cpu"


def load_run(path: str | Path) -> SavedRun:
    """Read and check one saved run (errors name the file)."""
    run = SavedRun(Path(path), load_benchmark_json(path))
    run.benchmarks  # noqa: B018 - duplicate keys are an input error, raised here rather than later
    return run


def check_comparable(runs: Sequence[SavedRun]) -> None:
    """Refuse (:class:`InputError`, naming the file and the field) runs the gate cannot judge honestly:

    - a run without ``machine_info``: its hardware could not be checked against the other side's;
    - a row of a kind the suite never writes (``perfsuite.results.ROW_KINDS``);
    - a row without ``extra_info`` (or without its ``kind``) where the same benchmark in another of the
      runs has one: what it measured cannot be checked against the others (an edited file). A benchmark
      without a kind in every run (a project's own benchmark) is compared on its times alone;
    - a row whose ``extra_info.parity.passed`` is false while its run does not record that test as failed
      (a run whose parity failed records the failure, and the gate fails that row; one that says so
      without it was edited or saved by another tool).
    """
    from perfsuite.results import ROW_KINDS

    kinds: dict[str, tuple[str, SavedRun]] = {}  # benchmark -> a kind it has in some run, and that run
    for run in runs:
        where = f"results file {run.path}"
        if not run.data.get("machine_info"):
            raise InputError(f"{where}: no machine_info: its hardware cannot be checked against the other "
                             "side's (saved by another tool, or edited?)")
        for record in run.benchmarks.values():
            field = f"{where}: benchmark {record.key}: extra_info"
            kind = record.extra_info.get("kind")
            if kind is not None and kind not in ROW_KINDS:
                raise InputError(f"{field}.kind {kind!r} is not a kind of row perfsuite writes "
                                 f"({', '.join(ROW_KINDS)})")
            if kind is not None:
                kinds.setdefault(record.key, (kind, run))
            parity = record.extra_info.get("parity")
            if isinstance(parity, Mapping) and parity.get("passed") is False \
                    and run.outcomes.get(record.key, {}).get("outcome") != "failed":
                raise InputError(f"{field}.parity.passed is false, but the run does not record the test as "
                                 "failed (edited, or saved by another tool): its outputs were wrong, its time "
                                 "is not comparable")
    for run in runs:
        for record in run.benchmarks.values():
            if record.key in kinds and record.extra_info.get("kind") is None:
                kind, other = kinds[record.key]
                missing = "extra_info is missing" if not record.extra_info else "extra_info.kind is missing"
                raise InputError(f"results file {run.path}: benchmark {record.key}: {missing}, where "
                                 f"{other.path} has a {kind} row: what it measured is unknown (edited?)")
            known = kinds.get(record.key)
            if known and record.extra_info.get("kind") != known[0]:
                raise InputError(f"results file {run.path}: benchmark {record.key}: extra_info.kind "
                                 f"{record.extra_info.get('kind')!r}, where {known[1].path} has {known[0]!r}")


def check_storable(run: SavedRun, allow_failures: bool = False) -> None:
    """Refuse a run as a baseline: what :func:`check_comparable` refuses, a run without any row, or with
    the suite's rows but no latency row (every latency benchmark failed or was skipped: nothing to compare
    against), and, unless ``allow_failures``, a run
    that records a failed test (its rows may be missing or measured on wrong outputs)."""
    check_comparable([run])
    where = f"results file {run.path}"
    suite_rows = [record for record in run.benchmarks.values() if record.kind is not None]
    if not run.benchmarks or (suite_rows and not any(record.kind == "latency" for record in suite_rows)):
        raise InputError(f"{where}: no latency row (every latency benchmark failed or was skipped): "
                         "nothing a later run could be compared against; not stored")
    failed = [nodeid for nodeid, entry in run.outcomes.items() if entry.get("outcome") == "failed"]
    if failed and not allow_failures:
        more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
        raise InputError(f"{where}: test {failed[0]}{more} failed in this run; not stored "
                         "(--allow-failures stores it anyway)")


def _storage_matches(item: str, storage: Path) -> list[Path]:
    if Path(item).is_absolute() or item.endswith(".json") or ".." in Path(item).parts:
        return []  # a path that does not exist, not an id
    if "/" in item:
        platform, prefix = item.rsplit("/", 1)
        patterns = [f"{glob.escape(platform)}/{glob.escape(prefix)}*.json"]
    else:
        patterns = [f"*/{glob.escape(item)}*.json", f"{glob.escape(item)}*.json"]
    return sorted({p for pattern in patterns for p in storage.glob(pattern) if p.is_file()})


def resolve_side(spec: str, storage: str | Path = ".benchmarks", what: str = "runs") -> list[Path]:
    """The run files a side names (see the module docstring); an error names what matched nothing."""
    from perfsuite.gate.store import STORE_MARKER

    storage = Path(storage)
    paths: list[Path] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        _recover_around(item)
        candidate = Path(item)
        if candidate.name == MANIFEST_NAME and candidate.is_file():
            candidate = candidate.parent  # the manifest stands for its baseline
        if candidate.is_dir():
            found = sorted(p for p in candidate.glob("*.json") if p.name != MANIFEST_NAME)
            if not found:
                hint = (": it is a baseline store, name one of its baselines (perfsuite baseline list)"
                        if (candidate / STORE_MARKER).exists() else "")
                raise InputError(f"{what} {item!r}: the folder has no *.json run files{hint}")
        elif candidate.is_file():
            found = [candidate]
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file() and Path(p).name != MANIFEST_NAME)
            if not found:
                raise InputError(f"{what} {item!r}: the glob matches no file")
        else:
            found = _storage_matches(item, storage) if storage.is_dir() else []
            if not found:
                raise InputError(f"{what} {item!r}: no such file or folder, and no pytest-benchmark run with that "
                                 f"id under {storage}/")
        paths.extend(p for p in found if p not in paths)
    if not paths:
        raise InputError(f"{what}: nothing given")
    return paths


def _recover_around(item: str) -> None:
    """Settle an interrupted baseline replacement where ``item`` points (the folder it names may be
    missing for the moment): in the deepest existing folder on its path and that folder's parent."""
    from perfsuite.gate.store import recover

    path = Path(item)
    while glob.has_magic(str(path)) or not path.is_dir():
        if path.parent == path:
            break
        path = path.parent
    for folder in dict.fromkeys([path, path.parent]):
        if folder.is_dir():
            recover(folder)


def load_side(spec: str | Sequence[str | Path], storage: str | Path = ".benchmarks",
              what: str = "runs") -> list[SavedRun]:
    """Load every run a side names; runs in a baseline folder are verified against its manifest."""
    from perfsuite.gate.store import load_baseline, refuse_unverified

    specs = [spec] if isinstance(spec, str) else [str(s) for s in spec]
    paths: list[Path] = []
    for item in specs:
        paths.extend(p for p in resolve_side(item, storage, what) if p not in paths)
    baselines: dict[Path, dict[str, SavedRun]] = {}
    runs = []
    for path in paths:
        folder = path.parent
        if (folder / MANIFEST_NAME).exists():
            if folder not in baselines:
                baselines[folder] = load_baseline(folder)
            run = baselines[folder].get(path.name)
            if run is None:
                raise InputError(f"{what} {path}: not in baseline {folder} (was it replaced while being read?)")
        else:
            run = load_run(path)
            refuse_unverified(run)
        runs.append(run)
    return runs


def provenance(runs: Sequence[SavedRun]) -> tuple[str, str]:
    """(weights, when) of ``runs`` as every chart's subtitle says them: each weights kind with its fingerprint's
    first 12 hex digits ("random 415ac74c9984"), and the day or span of days the runs were made."""
    weights = list(dict.fromkeys(
        f"{info.get('weights')} {str(info.get('weights_fingerprint') or '')[:12]}".strip()
        for run in runs for record in run.benchmarks.values() if (info := record.extra_info).get("weights")))
    dates = sorted({str(run.datetime)[:10] for run in runs if run.datetime})
    when = (dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}") if dates else "date not recorded"
    return f"weights {', '.join(weights) or 'not recorded'}", when


def per_run_values(runs: Sequence[SavedRun], key: str, statistic: str = "median") -> list[float]:
    """The chosen statistic of benchmark ``key`` in each run that has it."""
    return [run.benchmarks[key].statistic(statistic) for run in runs if key in run.benchmarks]


def median_of(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None
