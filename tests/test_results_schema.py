"""Every results file is checked against ``results.RESULTS_SCHEMA`` before anything reads it.

Each case is valid JSON with one field of the wrong type, made by editing a real run; before the
schema each of them ended in a Python traceback (or a silent pass) in ``compare``, ``report`` or
``upgrade-report``. Now every command refuses the file with exit 2, naming the file and the field.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from perfsuite.cli import main
from perfsuite.results import load_benchmark_json

DOCS = Path(__file__).resolve().parent.parent / "docs"
BASE = sorted((DOCS / "gate-drill" / "session-1" / "runs").glob("base-*.json"))[:3]
ROW = ["benchmarks", 0]
EXTRA = [*ROW, "extra_info"]

pytestmark = pytest.mark.skipif(len(BASE) < 3, reason="the gate drill's runs are not recorded")

CASES = {  # field path, wrong value, what the error names
    "host_telemetry": ([*EXTRA, "host_telemetry"], "busy", "benchmarks[0].extra_info.host_telemetry"),
    "other_cpu_fraction": ([*EXTRA, "host_telemetry"], {"other_cpu_fraction": "high"},
                           "benchmarks[0].extra_info.host_telemetry.other_cpu_fraction"),
    "gpu_telemetry": ([*EXTRA, "gpu_telemetry"], "x", "benchmarks[0].extra_info.gpu_telemetry"),
    "throttle_reasons": ([*EXTRA, "gpu_telemetry"], {"throttled": True, "throttle_reasons": "hot"},
                         "benchmarks[0].extra_info.gpu_telemetry.throttle_reasons"),
    "parity": ([*EXTRA, "parity"], "yes", "benchmarks[0].extra_info.parity"),
    "max_rel_error": ([*EXTRA, "parity", "outputs", "logits", "max_rel_error"], "big",
                      "benchmarks[0].extra_info.parity.outputs.logits.max_rel_error"),
    "stability": ([*EXTRA, "stability"], {"unstable": True, "cv_threshold": "x"},
                  "benchmarks[0].extra_info.stability.cv_threshold"),
    "batch_size": ([*EXTRA, "batch_size"], "8", "benchmarks[0].extra_info.batch_size"),
    "latency without batch": ([*EXTRA, "batch_size"], None, "benchmarks[0].extra_info.batch_size"),
    "build_s": ([*EXTRA, "build_s"], "slow", "benchmarks[0].extra_info.build_s"),
    "load_s": ([*EXTRA, "load_s"], -1.0, "benchmarks[0].extra_info.load_s"),
    "peak_gpu_memory_bytes": ([*EXTRA, "peak_gpu_memory_bytes"], [1], "benchmarks[0].extra_info.peak_gpu_memory_bytes"),
    "host_rss_delta_bytes": ([*EXTRA, "host_rss_delta_bytes"], "lots", "benchmarks[0].extra_info.host_rss_delta_bytes"),
    "kind": ([*EXTRA, "kind"], ["latency"], "benchmarks[0].extra_info.kind"),
    "backend": ([*EXTRA, "backend"], {"name": "eager"}, "benchmarks[0].extra_info.backend"),
    "precision": ([*EXTRA, "precision"], 32, "benchmarks[0].extra_info.precision"),
    "model": ([*EXTRA, "model"], ["alexnet"], "benchmarks[0].extra_info.model"),
    "timing": ([*EXTRA, "timing"], {"warmup_rounds": "many"}, "benchmarks[0].extra_info.timing.warmup_rounds"),
    "schema_version": ([*EXTRA, "schema_version"], "1", "benchmarks[0].extra_info.schema_version"),
    "stats.iqr": ([*ROW, "stats", "iqr"], None, "benchmarks[0].stats.iqr"),
    "stats.data": ([*ROW, "stats", "data"], ["fast"], "benchmarks[0].stats.data[0]"),
    "stats.rounds": ([*ROW, "stats", "rounds"], 0, "benchmarks[0].stats.rounds"),
    "fullname": ([*ROW, "fullname"], ["x"], "benchmarks[0].fullname"),
    "machine_info.perfsuite.cpu_count": (["machine_info", "perfsuite", "cpu_count"], [2],
                                         "machine_info.perfsuite.cpu_count"),
    "machine_info.perfsuite.torch": (["machine_info", "perfsuite", "torch"], {"version": 2},
                                     "machine_info.perfsuite.torch"),
    "machine_info.perfsuite": (["machine_info", "perfsuite"], "cpu", "machine_info.perfsuite"),
    "commit_info.id": (["commit_info", "id"], [1], "commit_info.id"),
    "outcomes": (["perfsuite", "outcomes"], [{"nodeid": "a::b", "outcome": "skipped", "reason": 5}],
                 "perfsuite.outcomes[0].reason"),
    "outcome": (["perfsuite", "outcomes"], [{"nodeid": "a::b", "outcome": "crashed"}], "perfsuite.outcomes[0].outcome"),
    "device_time available without a figure": ([*EXTRA, "device_time"], {"available": True, "median_s": None},
                                               "benchmarks[0].extra_info.device_time.median_s"),
    "host_time unavailable without a reason": ([*EXTRA, "host_time"], {"available": False, "reason": ""},
                                               "benchmarks[0].extra_info.host_time.reason"),
    "device_time.blocks_rejected": ([*EXTRA, "device_time"], {"available": False, "reason": "x", "blocks_rejected": -1},
                                    "benchmarks[0].extra_info.device_time.blocks_rejected"),
}


def broken_copy(tmp_path: Path, path: list, value) -> Path:
    data = copy.deepcopy(json.loads(BASE[0].read_text()))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    return broken


@pytest.mark.parametrize("mutation", CASES)
def test_a_wrong_typed_field_is_refused_by_every_command(tmp_path, capsys, mutation):
    path, value, field = CASES[mutation]
    broken = broken_copy(tmp_path, path, value)
    base = ",".join(map(str, BASE))
    for command in (["compare", base, str(broken)], ["compare", str(broken), base],
                    ["report", str(broken), "--output", str(tmp_path / "report")],
                    ["upgrade-report", base, str(broken), "--no-golden", "--output", str(tmp_path / "upgrade.md")]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert f"error: results file {broken}: field {field}:" in err, (command, err)


def test_fields_may_be_null_or_added():
    """Measured values may be null; a later version may add fields anywhere."""
    from perfsuite.results import parse_benchmark_json

    data = json.loads(BASE[0].read_text())
    info = data["benchmarks"][0]["extra_info"]
    info.update(build_s=None, load_s=None, parity=None, stability=None, gpu_telemetry=None, host_telemetry=None,
                peak_gpu_memory_bytes=None, timing=None, a_field_of_tomorrow={"nested": [1, "x"]})
    data["benchmarks"][0]["stats"]["something_new"] = "ok"
    data["machine_info"]["perfsuite"]["new_library"] = {"version": "1.0"}
    data["perfsuite"]["added_later"] = True
    loaded = parse_benchmark_json(json.dumps(data).encode(), "results file edited.json")
    assert loaded["benchmarks"][0]["extra_info"]["a_field_of_tomorrow"] == {"nested": [1, "x"]}


def test_every_committed_results_file_fits_the_schema():
    files = [p for p in DOCS.rglob("*.json") if "benchmarks" in json.loads(p.read_text())]
    assert len(files) > 100
    for path in files:
        load_benchmark_json(path)


def test_device_and_host_time_fields_fit_the_schema():
    """What ``device_time`` writes, available (as measured on an H100) and unavailable, is accepted."""
    from perfsuite import device_time
    from perfsuite.results import parse_benchmark_json

    data = json.loads(BASE[0].read_text())
    rows = data["benchmarks"] = [data["benchmarks"][0], copy.deepcopy(data["benchmarks"][0])]
    measured = ({"available": True, "reason": None, "median_s": 2.246e-4, "q1_s": 2.243e-4, "q3_s": 2.249e-4,
                 "blocks": 10, "calls_per_block": 18, "hold": device_time.FLAG_HOLD, "blocks_rejected": 0,
                 "rejections": None, "timer_overhead_s": 7.1e-8, "relative_ci_halfwidth": 0.0022, "method": "m"},
                {"available": True, "reason": None, "median_s": 5.18e-4, "q1_s": 5.1e-4, "q3_s": 5.3e-4, "blocks": 10,
                 "calls_per_block": 18, "clock": device_time.HOST_CLOCK, "timer_overhead_s": 3.6e-8})
    for row, (device, host) in zip(rows, [measured, device_time.unavailable("no CUDA device: device is cpu")]):
        row["extra_info"].update(device_time=device, host_time=host)
    loaded = parse_benchmark_json(json.dumps(data).encode(), "results file with device time")
    assert loaded["benchmarks"][1]["extra_info"]["device_time"]["available"] is False
