"""The versioned schema of every benchmark row's ``extra_info``.

pytest-benchmark stores ``extra_info`` verbatim in its JSON. Every reader (``perfsuite compare``,
``report``, ``upgrade-report``, the baseline store, the docs/results generator) loads a results file
through :func:`load_benchmark_json`, which checks it against :data:`RESULTS_SCHEMA` (the JSON Schema
at the end of this module: the type of every field a reader uses; any field may be null where
marked, and fields may be added) and refuses it naming the file and the field.

Schema 1 (all times in seconds, memory in bytes; ``None`` where not measurable):

    schema_version      1
    kind                "latency" | "model_load" | "cold_start" | "timer_check" | ...
    model, weights, weights_source, weights_fingerprint
    backend, precision, batch_size, device
    numeric_mode        "fp32" | "tf32" | "fp16" | "bf16" (fp32 with TF32 in effect is "tf32")
    tf32                {"cudnn_conv": "tf32"|"ieee", "cuda_matmul": "tf32"|"ieee"}
    cudnn_benchmark     bool
    build_s             conversion: what making the row's converted model cost (an export, an engine:
                        as measured when made, also when read from the cache; ``Runner.conversion_seconds``)
    load_s, cold_start_s  loading it onto the device; its first call after load
    images_per_s        batch_size / median latency
    peak_gpu_memory_bytes  device memory the runner holds at its peak: the fall of cudaMemGetInfo's
                        free memory over build, load, first call and the timed rounds (every
                        library's allocations; ``measure.RunnerFootprint``); None on the CPU
    host_rss_delta_bytes   host RSS growth over build and load, freed memory returned first
    memory_method       how the two were measured
    host_peak_rss_bytes only in runs saved before 2026-12 (the process's peak: not a figure of the row)
    timing              {"clock", "synchronized", "warmup_rounds", "rounds", "calls_per_round" (calls
                        timed per round, synchronized after the last), "timer_overhead_s",
                        "timer_overhead_fraction" (of a round), "gc_disabled", "cpu_affinity"}
    device_time         latency rows only: the device's time per call, measured with the stream held
                        while the host enqueued a block of calls (``perfsuite.device_time``,
                        docs/measurement.md): {"available", "reason" (why not, else null), "median_s",
                        "q1_s", "q3_s" (per call, over verified blocks), "blocks", "calls_per_block",
                        "hold" (which hold), "blocks_rejected" (blocks whose hold did not cover the
                        enqueue: never in the figure), "rejections" ({reason: count} or null),
                        "timer_overhead_s" (event pair per call, from an empty held block),
                        "relative_ci_halfwidth" (of the median), "method", "flag_hold_unavailable"
                        (only where the spin hold was used: why not the flag)}; on the CPU, or for a
                        runner whose calls cannot be held, "available" false and the figures null
    host_time           latency rows only: the host's CPU time per call of that enqueue, from the same
                        blocks: {"available", "reason", "median_s", "q1_s", "q3_s", "blocks",
                        "calls_per_block", "clock", "timer_overhead_s" (from an empty enqueue, per call)}
    host_probe          the host-speed probe timed after every round of this row (``measure.HostProbe``):
                        {"kind", "ops_per_block", "blocks", "median_s", "q1_s", "q3_s"}, or None
    parity              comparator report against the reference (see ``comparator``), or None
    backend_info        backend-specific facts (exporter, opset, engine bytes, ...)
    stability           {"cv", "cv_threshold", "unstable"}: stddev/mean of the timed rounds, the
                        threshold it was held to, and whether it exceeded it (``gate.stability``)
    gpu_telemetry       NVML readings before and after the timed rounds, and what they mean
                        (``telemetry``): {"before", "after", "throttled", "throttle_reasons",
                        "contended", "other_processes"}; None on the CPU or without nvidia-ml-py;
                        "throttled", "contended" and "other_processes" are None (unknown) where
                        an NVML query failed and the other readings show nothing
    host_telemetry      CPU time other processes used while the rounds were timed (``telemetry``):
                        {"wall_s", "cpus" (the CPUs the process may use), "cpu_count" (how many),
                        "cpu_quota" (cgroup quota in CPUs, or None), "cpu_quota_source" (its file),
                        "own_cpu_s", "other_cpu_s" (others on those CPUs), "cgroup_other_cpu_s"
                        (others in the quota's cgroup, where it reports its usage), "cpu_throttled_s"
                        (time the quota held the cgroup back), "other_cpu_fraction" (the larger
                        of other_cpu_s / (wall_s x cpu_count) and cgroup_other_cpu_s / (wall_s x
                        cpu_quota)), "load_average_before", "load_average_after"}

Fields added later keep their meaning; readers treat a missing field as "not recorded".

Besides the rows, the plugin adds one top-level key to the saved JSON (pytest-benchmark keeps
only the rows of tests that ran, so skips and failures would otherwise leave no trace):

    perfsuite           {"schema_version": 1, "outcomes": [{"nodeid", "outcome", "when", "reason"}],
                        "host_probe": {"median_s", "rows"} (the median of the rows' probes) or None}
                        one entry per test that was skipped or failed ("outcome" is "skipped"
                        or "failed"; "when" is "setup", "call" or "teardown"); runs saved by
                        the first version carry ``perfsuite_skipped`` ([{"nodeid", "reason"}])
                        instead, which readers also accept

The machine (``machine_info["perfsuite"]``, ``gate.hardware.machine_section``) includes, for a GPU run,
the card it ran on: ``gpu_index`` (torch's number), ``gpu_uuid`` and ``gpu_pci_bus_id`` (as
``nvidia-smi --query-gpu=uuid,pci.bus_id`` writes them), ``cuda_visible_devices``, and with
nvidia-ml-py ``nvml_gpu_uuid`` / ``nvml_gpu_pci_bus_id`` (the card NVML's readings came from; every
``gpu_telemetry`` reading also names its ``gpu_uuid`` and ``gpu_pci_bus_id``).

A run stored in a baseline also carries ``perfsuite_baseline`` ({"fingerprint_id", "file"}, see
``gate.store``), so that it is never read without its baseline's manifest.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from perfsuite.errors import InputError
from perfsuite.gate.hardware import CPU_FIELDS, GPU_FIELDS, IDENTITY_FIELDS, SOFTWARE_FIELDS
from perfsuite.output import write_bytes
from perfsuite.validation import validate

SCHEMA_VERSION = 1


#: Every kind of row the suite's benchmarks save (``extra_info.kind``); a reader refuses any other.
ROW_KINDS = ("latency", "cold_start", "model_load", "compile_time", "roofline_rates", "e2e", "e2e_cold_start")


def make_extra_info(kind: str, **fields: Any) -> dict[str, Any]:
    """An ``extra_info`` dict of the current schema; values must be JSON-serializable."""
    if kind not in ROW_KINDS:
        raise ValueError(f"row kind {kind!r} is not in perfsuite.results.ROW_KINDS: add it there")
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


def write_bytes_atomic(path: str | Path, data: bytes | bytearray | memoryview, what: str | None = None) -> None:
    """Write by :mod:`perfsuite.output`'s rules: atomically onto a regular file or a new path (readers never
    see half a file, a full disk leaves the old one), through to a device or FIFO, a symlink followed."""
    write_bytes(path, data, what)


def write_text_atomic(path: str | Path, text: str, what: str | None = None) -> None:
    """UTF-8 text, see :func:`write_bytes_atomic`."""
    write_bytes(path, text.encode(), what)


def write_json_atomic(path: str | Path, data: Any, what: str | None = None) -> None:
    """JSON (indented, sorted keys), see :func:`write_bytes_atomic`."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True), what)


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
    """Read a pytest-benchmark JSON file, checked against :data:`RESULTS_SCHEMA`; a clear error naming
    the file (and the field) for anything else."""
    path = Path(path)
    where = f"results file {path}"
    if path.is_dir():
        raise InputError(f"{where}: is a folder, not a results file")
    if not path.is_file():
        raise InputError(f"{where}: does not exist")
    try:
        return parse_benchmark_json(path.read_bytes(), where)
    except OSError as exc:
        raise InputError(f"{where}: cannot be read ({exc.strerror or exc})") from exc


def parse_benchmark_json(content: bytes, where: str) -> dict[str, Any]:
    """The checked results document in ``content`` (the bytes of the file ``where`` names)."""
    try:
        text = content.decode()
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not text ({exc})") from exc
    if not text.strip():
        raise InputError(f"{where}: is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON, truncated or corrupt ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise InputError(f"{where}: not a pytest-benchmark results file (no 'benchmarks' list)")
    _refuse_newer_schema(data, where)
    validate(data, RESULTS_SCHEMA, where)
    return data


def _refuse_newer_schema(data: dict[str, Any], where: str) -> None:
    """A newer schema may change what fields mean: say "upgrade" before judging its fields."""
    section = data.get("perfsuite")
    versions = [("perfsuite.schema_version", section.get("schema_version") if isinstance(section, dict) else None)]
    versions += [(f"benchmarks[{index}].extra_info.schema_version", bench["extra_info"].get("schema_version"))
                 for index, bench in enumerate(data["benchmarks"])
                 if isinstance(bench, dict) and isinstance(bench.get("extra_info"), dict)]
    for field, version in versions:
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise InputError(f"{where}: field {field} is {version}, newer than this perfsuite understands "
                             f"({SCHEMA_VERSION}); upgrade perfsuite")


# -- the schema of a results file --------------------------------------------------------------------
# Every field a reader (gate, report, upgrade report, baseline store) uses is declared with its type;
# any field may be added later (additional properties are allowed) and measured values may be null.

_TEXT = {"type": ["string", "null"]}
_FLAG = {"type": ["boolean", "null"]}
_COUNT = {"type": ["integer", "null"], "minimum": 0}
_AMOUNT = {"type": ["number", "null"], "minimum": 0}  # seconds, bytes, rates: never negative
_NUMBER = {"type": ["number", "null"]}
_OBJECT = {"type": ["object", "null"]}
_SCALAR = {"type": ["string", "number", "boolean", "null"]}
_POSITIVE_TIME = {"type": "number", "exclusiveMinimum": 0}  # the gate divides by these, takes logarithms
_TIME = {"type": "number", "minimum": 0}
_POSITIVE_OR_NULL = {"type": ["number", "null"], "exclusiveMinimum": 0}
# a figure marked available has its median (the gate divides by it and takes its logarithm); an
# unavailable one says why
_FIGURE_PRESENT_WHEN_AVAILABLE = {
    "if": {"required": ["available"], "properties": {"available": {"const": True}}},
    "then": {"required": ["median_s"], "properties": {"median_s": {"type": "number", "exclusiveMinimum": 0}}},
    "else": {"required": ["reason"], "properties": {"reason": {"type": "string", "minLength": 1}}},
}


def _record(properties: dict[str, Any], *, nullable: bool = True, **more: Any) -> dict[str, Any]:
    return {"type": ["object", "null"] if nullable else "object", "properties": properties, **more}


def _array(items: dict[str, Any], *, nullable: bool = True) -> dict[str, Any]:
    return {"type": ["array", "null"] if nullable else "array", "items": items}


_STATS = _record({
    "median": _POSITIVE_TIME, "mean": _POSITIVE_TIME, "min": _POSITIVE_TIME, "max": _TIME, "stddev": _TIME,
    "q1": _TIME, "q3": _TIME, "iqr": _TIME, "rounds": {"type": "integer", "minimum": 1},
    "data": _array({"type": "number", "minimum": 0}),
}, nullable=False, required=["median", "mean", "stddev", "rounds"])

_PARITY_OUTPUT = _record({"passed": _FLAG, "max_rel_error": _AMOUNT, "max_abs_error": _AMOUNT, "min_cosine": _NUMBER,
                          "top1_agreement": _AMOUNT, "top5_agreement": _AMOUNT, "nonfinite": _COUNT,
                          "failures": _array({"type": "string"})}, nullable=False)

_EXTRA_INFO = _record({
    "schema_version": {"type": "integer", "minimum": 1, "maximum": SCHEMA_VERSION},
    **dict.fromkeys(("kind", "model", "weights", "weights_source", "weights_fingerprint", "backend", "precision",
                     "device", "numeric_mode", "transform", "pipeline"), _TEXT),
    "batch_size": {"type": ["integer", "null"], "minimum": 1},
    "cudnn_benchmark": _FLAG,
    "tf32": _record({"cudnn_conv": _TEXT, "cuda_matmul": _TEXT}),
    **dict.fromkeys(("build_s", "load_s", "cold_start_s", "images_per_s", "peak_gpu_memory_bytes",
                     "host_peak_rss_bytes"), _AMOUNT),
    "host_rss_delta_bytes": _NUMBER,  # memory can shrink
    "timing": _record({"clock": _TEXT, "synchronized": _FLAG, "warmup_rounds": _COUNT, "rounds": _COUNT,
                       "calls_per_round": {"type": ["integer", "null"], "minimum": 1},
                       "timer_overhead_s": _AMOUNT, "timer_overhead_fraction": _AMOUNT, "gc_disabled": _FLAG,
                       "cpu_affinity": _array({"type": "integer", "minimum": 0})}),
    # the gate divides by the probe's median and takes its logarithm
    "host_probe": _record({"kind": _TEXT, "ops_per_block": _COUNT, "blocks": _COUNT, "median_s": _POSITIVE_TIME,
                           "q1_s": _AMOUNT, "q3_s": _AMOUNT}, required=["median_s"]),
    "device_time": _record({
        "available": {"type": "boolean"}, "reason": _TEXT,
        **dict.fromkeys(("median_s", "q1_s", "q3_s"), _POSITIVE_OR_NULL),
        "blocks": _COUNT, "calls_per_block": {"type": ["integer", "null"], "minimum": 1}, "hold": _TEXT,
        "blocks_rejected": _COUNT,
        "rejections": {"type": ["object", "null"], "additionalProperties": {"type": "integer"}},
        "timer_overhead_s": _AMOUNT, "relative_ci_halfwidth": _AMOUNT, "method": _TEXT, "flag_hold_unavailable": _TEXT,
    }, required=["available"], allOf=[_FIGURE_PRESENT_WHEN_AVAILABLE]),
    "host_time": _record({
        "available": {"type": "boolean"}, "reason": _TEXT,
        **dict.fromkeys(("median_s", "q1_s", "q3_s"), _POSITIVE_OR_NULL),
        "blocks": _COUNT, "calls_per_block": {"type": ["integer", "null"], "minimum": 1}, "clock": _TEXT,
        "timer_overhead_s": _AMOUNT,
    }, required=["available"], allOf=[_FIGURE_PRESENT_WHEN_AVAILABLE]),
    "memory_method": _TEXT,
    "parity": _record({"passed": {"type": "boolean"},
                       "outputs": {"type": ["object", "null"], "additionalProperties": _PARITY_OUTPUT}}),
    "backend_info": _OBJECT,
    "stability": _record({"cv": _AMOUNT, "cv_threshold": {"type": "number", "minimum": 0}, "unstable": _FLAG}),
    "gpu_telemetry": _record({
        "before": _OBJECT, "after": _OBJECT, "throttled": _FLAG, "contended": _FLAG, "other_processes": _COUNT,
        "throttle_reasons": _array({"type": "string"}, nullable=False)}),
    "host_telemetry": _record({
        **dict.fromkeys(("wall_s", "own_cpu_s", "other_cpu_s", "other_cpu_fraction", "cgroup_other_cpu_s",
                         "cpu_throttled_s"), _AMOUNT),
        "cpu_count": {"type": ["integer", "null"], "minimum": 1},
        "cpus": _array({"type": "integer", "minimum": 0}),
        "cpu_quota": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "cpu_quota_source": _TEXT,
        "load_average_before": _array({"type": "number"}), "load_average_after": _array({"type": "number"})}),
},  # a latency row is drawn and compared per batch size: it must say which
    allOf=[{"if": {"required": ["kind"], "properties": {"kind": {"const": "latency"}}},
            "then": {"required": ["batch_size"], "properties": {"batch_size": {"type": "integer"}}}}])

_OUTCOME = _record({"nodeid": {"type": "string"}, "outcome": {"enum": ["skipped", "failed"]}, "when": _TEXT,
                    "reason": _TEXT}, nullable=False, required=["nodeid", "outcome"])

RESULTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "pytest-benchmark results file, as perfsuite reads it",
    **_record({
        "benchmarks": _array(_record({
            "name": {"type": "string"}, "fullname": {"type": "string"}, "group": _TEXT, "param": _TEXT,
            "params": _OBJECT, "stats": _STATS, "extra_info": _EXTRA_INFO,
        }, nullable=False, required=["name", "stats"]), nullable=False),
        "machine_info": _record({
            # the hardware fingerprint and the software versions: compared, hashed, shown
            "perfsuite": _record({"device": {"type": "string"}, "gpu_memory_bytes": _AMOUNT, "gpu_index": _COUNT,
                                  **dict.fromkeys((*CPU_FIELDS, *GPU_FIELDS, *SOFTWARE_FIELDS), _SCALAR),
                                  **dict.fromkeys(IDENTITY_FIELDS, _TEXT)},
                                 nullable=False),
            # pytest-benchmark's own fields, the fingerprint of runs saved without the perfsuite plugin
            "cpu": _record({"brand_raw": _TEXT, "count": {"type": ["integer", "null"], "minimum": 1}},
                           nullable=False),
            "processor": _TEXT, "machine": _TEXT, "python_version": _TEXT,
        }, nullable=False),
        "commit_info": _record({"id": _TEXT, "dirty": _FLAG, "branch": _TEXT, "time": _TEXT, "author_time": _TEXT,
                                "project": _TEXT}),
        "datetime": _TEXT,
        "version": _TEXT,
        "perfsuite": _record({"schema_version": {"type": "integer", "minimum": 1, "maximum": SCHEMA_VERSION},
                              "outcomes": _array(_OUTCOME, nullable=False),
                              "host_probe": _record({"median_s": _POSITIVE_TIME, "rows": _COUNT})}),
        # a run stored in a baseline names it (``gate.store``)
        "perfsuite_baseline": _record({"fingerprint_id": {"type": "string"}, "file": {"type": "string"}},
                                      nullable=False),
        # the first plugin version recorded skips only, as [{"nodeid", "reason"}]
        "perfsuite_skipped": _array(_record({"nodeid": {"type": "string"}, "reason": _TEXT}, nullable=False,
                                            required=["nodeid"]), nullable=False),
    }, nullable=False, required=["benchmarks"]),
}
