"""The versioned schema of every benchmark row's ``extra_info``.

pytest-benchmark stores ``extra_info`` verbatim in its JSON; readers (``perfsuite compare``,
``report``, the docs/results generator) check ``schema_version`` before trusting the fields.

Schema 1 (all times in seconds, memory in bytes; ``None`` where not measurable):

    schema_version      1
    kind                "latency" | "model_load" | "cold_start" | "timer_check" | ...
    model, weights, weights_source, weights_fingerprint
    backend, precision, batch_size, device
    numeric_mode        "fp32" | "tf32" | "fp16" | "bf16" (fp32 with TF32 in effect is "tf32")
    tf32                {"cudnn_conv": "tf32"|"ieee", "cuda_matmul": "tf32"|"ieee"}
    cudnn_benchmark     bool
    build_s, load_s, cold_start_s
    images_per_s        batch_size / median latency
    peak_gpu_memory_bytes, host_rss_delta_bytes, host_peak_rss_bytes
    timing              {"clock", "synchronized", "warmup_rounds", "rounds", "timer_overhead_s"}
    parity              comparator report against the reference (see ``comparator``), or None
    backend_info        backend-specific facts (exporter, opset, engine bytes, ...)
    stability           {"cv", "cv_threshold", "unstable"}: stddev/mean of the timed rounds, the
                        threshold it was held to, and whether it exceeded it (``gate.stability``)
    gpu_telemetry       NVML readings before and after the timed rounds, and what they mean
                        (``telemetry``): {"before", "after", "throttled", "throttle_reasons",
                        "contended", "other_processes"}; None on the CPU or without nvidia-ml-py
    host_telemetry      CPU time other processes used while the rounds were timed (``telemetry``):
                        {"wall_s", "cpu_count", "own_cpu_s", "other_cpu_s", "other_cpu_fraction",
                        "load_average_before", "load_average_after"}

Fields added later keep their meaning; readers treat a missing field as "not recorded".

Besides the rows, the plugin adds one top-level key to the saved JSON (pytest-benchmark keeps
only the rows of tests that ran, so skips and failures would otherwise leave no trace):

    perfsuite           {"schema_version": 1, "outcomes": [{"nodeid", "outcome", "when", "reason"}]}
                        one entry per test that was skipped or failed ("outcome" is "skipped"
                        or "failed"; "when" is "setup", "call" or "teardown"); runs saved by
                        the first version carry ``perfsuite_skipped`` ([{"nodeid", "reason"}])
                        instead, which readers also accept
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from perfsuite.errors import InputError

SCHEMA_VERSION = 1


def make_extra_info(kind: str, **fields: Any) -> dict[str, Any]:
    """An ``extra_info`` dict of the current schema; values must be JSON-serializable."""
    info = {"schema_version": SCHEMA_VERSION, "kind": kind, **fields}
    json.dumps(info, allow_nan=True)  # fail here, not when pytest-benchmark saves
    return info


def run_fields(model: Any, spec: Any, transform: str) -> dict[str, Any]:
    """The fields every benchmark row of one runner carries: model and weights, precision, batch size,
    device, numeric mode, TF32 and cuDNN settings, preprocessing (``model`` a LoadedModel, ``spec`` a RunSpec)."""
    import torch

    from perfsuite import environment
    from perfsuite.tolerances import numeric_mode

    return {
        **model.describe(),
        "precision": spec.precision,
        "batch_size": spec.batch_size,
        "device": spec.device,
        "numeric_mode": numeric_mode(spec.precision, environment.tf32_in_effect(spec.device)),
        "tf32": environment.tf32_settings(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "transform": transform,
    }


def clean_json(value: Any) -> Any:
    """Replace NaN/Inf (not valid JSON for many readers) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def write_bytes_atomic(path: str | Path, data: bytes | bytearray | memoryview) -> None:
    """Write to a temporary file in the same folder, fsync, rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o644)  # mkstemp's 0600 would make reports and baselines private to their writer
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """UTF-8 text written atomically, see :func:`write_bytes_atomic`."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | Path, data: Any) -> None:
    """JSON (indented, sorted keys) written atomically, see :func:`write_text_atomic`."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True))


def read_json_file(path: str | Path, where: str, error: type[InputError] = InputError) -> Any:
    """The parsed JSON of ``path``; ``error`` with ``where`` (a phrase naming the file) when it does not
    exist, is not text or is not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{where}: does not exist")
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not text ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON, truncated or corrupt ({exc})") from exc


def load_benchmark_json(path: str | Path) -> dict[str, Any]:
    """Read a pytest-benchmark JSON file; a clear error naming the file for anything else.

    Checks what readers rely on: a ``benchmarks`` list whose rows have a name and numeric
    ``stats`` (median, mean, stddev, rounds), a known ``extra_info`` schema, dict-valued
    ``machine_info``/``commit_info`` and a well-formed ``perfsuite`` section when present.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"results file {path}: is a folder, not a results file")
    if not path.is_file():
        raise InputError(f"results file {path}: does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise InputError(f"results file {path}: not text ({exc})") from exc
    if not text.strip():
        raise InputError(f"results file {path}: is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"results file {path}: not valid JSON, truncated or corrupt ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise InputError(f"results file {path}: not a pytest-benchmark results file (no 'benchmarks' list)")
    for key in ("machine_info", "commit_info"):
        if not isinstance(data.get(key, {}), dict):
            raise InputError(f"results file {path}: '{key}' is not an object")
    for index, bench in enumerate(data["benchmarks"]):
        if not isinstance(bench, dict) or "stats" not in bench or "name" not in bench:
            raise InputError(f"results file {path}: benchmark #{index} lacks 'name' or 'stats'")
        _check_stats(path, bench)
        extra = bench.get("extra_info") or {}
        if not isinstance(extra, dict):
            raise InputError(f"results file {path}: benchmark {bench['name']}: 'extra_info' is not an object")
        version = extra.get("schema_version")
        if version is not None and (not isinstance(version, int) or version > SCHEMA_VERSION):
            raise InputError(
                f"results file {path}: benchmark {bench['name']} has extra_info schema {version}, "
                f"newer than this perfsuite understands ({SCHEMA_VERSION}); upgrade perfsuite"
            )
    _check_outcomes(path, data.get("perfsuite"))
    legacy = data.get("perfsuite_skipped")  # the first plugin version: [{"nodeid", "reason"}], skips only
    if legacy is not None and (not isinstance(legacy, list) or not all(
            isinstance(e, dict) and isinstance(e.get("nodeid"), str) for e in legacy)):
        raise InputError(f"results file {path}: 'perfsuite_skipped' is not a list of {{'nodeid', 'reason'}}")
    return data


def _check_stats(path: Path, bench: dict[str, Any]) -> None:
    stats = bench["stats"]
    if not isinstance(stats, dict):
        raise InputError(f"results file {path}: benchmark {bench['name']}: 'stats' is not an object")
    for key in ("median", "mean", "stddev", "rounds"):
        value = stats.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"results file {path}: benchmark {bench['name']}: stats.{key} is {value!r}, "
                             "not a finite non-negative number")
    for key in ("median", "mean", "min"):  # the gate divides by these and takes their logarithms
        if key in stats and not (isinstance(stats[key], (int, float)) and stats[key] > 0):
            raise InputError(f"results file {path}: benchmark {bench['name']}: stats.{key} is {stats[key]!r}, "
                             "not a positive time")
    if stats["rounds"] < 1:
        raise InputError(f"results file {path}: benchmark {bench['name']}: stats.rounds is {stats['rounds']}")
    data = stats.get("data")
    if data is not None and (not isinstance(data, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in data)):
        raise InputError(f"results file {path}: benchmark {bench['name']}: stats.data is not a list of numbers")


def _check_outcomes(path: Path, section: Any) -> None:
    if section is None:
        return
    if not isinstance(section, dict) or not isinstance(section.get("outcomes", []), list):
        raise InputError(f"results file {path}: 'perfsuite' section is not {{'outcomes': [...]}}")
    for entry in section.get("outcomes", []):
        if not isinstance(entry, dict) or not isinstance(entry.get("nodeid"), str) \
                or entry.get("outcome") not in ("skipped", "failed"):
            raise InputError(f"results file {path}: 'perfsuite' outcome entry {entry!r} is malformed")
