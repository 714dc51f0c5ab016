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


def clean_json(value: Any) -> Any:
    """Replace NaN/Inf (not valid JSON for many readers) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=2, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_benchmark_json(path: str | Path) -> dict[str, Any]:
    """Read a pytest-benchmark JSON file; a clear error naming the file for anything else."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"results file {path}: does not exist")
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError as exc:
        raise InputError(f"results file {path}: not text ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"results file {path}: not valid JSON, truncated or corrupt ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise InputError(f"results file {path}: not a pytest-benchmark results file (no 'benchmarks' list)")
    for index, bench in enumerate(data["benchmarks"]):
        if not isinstance(bench, dict) or "stats" not in bench or "name" not in bench:
            raise InputError(f"results file {path}: benchmark #{index} lacks 'name' or 'stats'")
        extra = bench.get("extra_info") or {}
        version = extra.get("schema_version")
        if version is not None and version > SCHEMA_VERSION:
            raise InputError(
                f"results file {path}: benchmark {bench['name']} has extra_info schema {version}, "
                f"newer than this perfsuite understands ({SCHEMA_VERSION}); upgrade perfsuite"
            )
    return data
