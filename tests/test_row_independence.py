"""A row's conversion, load and memory figures are its own: the same when it runs alone and after other rows.

Issue 9 found the ONNX export paid by whichever onnxruntime row ran first (build_s 5.94 s there, 13 µs in
every later row) and host RSS growth following the export into whichever test did it (+346 MiB "memory
regressed" for unchanged code). Here the onnxruntime fp32 batch-8 row runs alone, then after the eager
rows and the batch-1 row that made the same dynamic-batch export; each run in a fresh process and a fresh
cache, as CI runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from child_process import child_env, read_child_json, what_it_printed

ROOT = Path(__file__).resolve().parent.parent
ROW = "test_latency[onnxruntime-fp32-b8]"

pytestmark = pytest.mark.slow  # two fresh benchmark processes with ONNX exports: about a minute


def _row(tmp_path: Path, name: str, *selection: str) -> dict:
    output = tmp_path / f"{name}.json"
    env = child_env(PERFSUITE_WEIGHTS="random", PERFSUITE_CACHE_DIR=str(tmp_path / f"cache-{name}"))
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/test_latency.py", "-p", "no:cacheprovider", "-q",
         "--device", "cpu", "--precisions", "fp32", "--batch-sizes", "1,8", "--benchmark-max-time", "0.05",
         "--benchmark-min-rounds", "3", "--benchmark-json", str(output), *selection],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert completed.returncode == 0, what_it_printed(completed)
    rows = {row["name"]: row for row in read_child_json(output, completed)["benchmarks"]}
    return rows[ROW]["extra_info"]


@pytest.fixture(scope="module")
def alone_and_after(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rows")
    with pytest.MonkeyPatch.context() as patch:
        # As in an xdist worker (pytest tests -m slow -n 4): the worker's variables must not reach the
        # children, or pytest-benchmark disables itself there and they write no JSON (an empty file, 5.2).
        patch.setenv("PYTEST_XDIST_WORKER", "gw0")
        alone = _row(folder, "alone", "--backends", "onnxruntime", "-k", "onnxruntime-fp32-b8")
        after = _row(folder, "after", "--backends", "eager,onnxruntime")
    return alone, after


def test_the_conversion_cost_is_the_rows_own(alone_and_after):
    alone, after = alone_and_after
    assert after["backend_info"]["artifact_cache"] == "hit"  # the batch-1 row made the export in that run
    assert alone["backend_info"]["artifact_cache"] == "miss"
    # Both are the export's cost as measured when it was made (in two processes: timing noise only).
    assert alone["build_s"] > 0.5 and after["build_s"] > 0.5
    assert 0.5 < after["build_s"] / alone["build_s"] < 2


def test_load_and_memory_are_the_rows_own(alone_and_after):
    alone, after = alone_and_after
    assert 0.25 < after["load_s"] / alone["load_s"] < 4
    # Host RSS growth: the session and the export it holds (~245 MB of fp32 weights twice over), not
    # whatever an earlier row left free or the export's transient memory.
    assert alone["host_rss_delta_bytes"] > 200 << 20
    assert abs(after["host_rss_delta_bytes"] - alone["host_rss_delta_bytes"]) < max(
        64 << 20, 0.15 * alone["host_rss_delta_bytes"])
