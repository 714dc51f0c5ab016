"""The gate and the host-speed probe: slow-host runs set aside, per-probe figures, always shown.

Runs are the CPU drill's real runs (session 3, eager fp32 batch 1), edited the way a host state
would change them: each run gets a host-speed probe, and a second, device-bound row; in a run that
landed in a slow host state the probe and the host-bound row slow down together, the device-bound
row does not (issue 11: per-process medians 397-771 µs in two host modes on one H200 machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfsuite.cli import main
from perfsuite.gate.runs import SavedRun
from perfsuite.gate.settings import GateSettings
from perfsuite.gate.tables import render_result
from perfsuite.gate.verdict import ALL_RUNS, FAST_HOST, PER_PROBE, Verdict, compare_runs

RUNS = Path(__file__).resolve().parent.parent / "docs" / "gate-drill" / "session-3" / "runs"
BASE = sorted(RUNS.glob("base-*.json"))
HOST_BOUND = "benchmarks/test_latency.py::test_latency[eager-fp32-b1]"
DEVICE_BOUND = "benchmarks/test_latency.py::test_latency[eager-fp32-b64]"
SETTINGS = GateSettings()
PROBE_S = 60e-6

pytestmark = pytest.mark.skipif(len(BASE) < 12, reason="the gate drill's session-3 runs are not recorded")


def scaled(stats: dict, factor: float) -> dict:
    return {key: value * factor if key in ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3") else value
            for key, value in stats.items()}


def run_in_host_state(path: Path, host: float, slower: float = 1.0, probe: bool = True) -> SavedRun:
    """A real run whose host was ``host`` times slower than the fastest (probe and host-bound row follow
    it), with a device-bound copy of its row, every row ``slower`` times slower (the change under test)."""
    data = json.loads(path.read_text())
    (row,) = data["benchmarks"]
    row.pop("stats").pop("data", None)
    stats = json.loads(path.read_text())["benchmarks"][0]["stats"]
    stats.pop("data")
    device = json.loads(json.dumps(row))
    device.update(name="test_latency[eager-fp32-b64]", fullname=DEVICE_BOUND, stats=scaled(stats, 40 * slower))
    device["extra_info"]["batch_size"] = 64
    row["stats"] = scaled(stats, host * slower)
    for bench, probe_s in ((row, PROBE_S * host), (device, PROBE_S * host * 1.01)):
        bench["extra_info"]["host_probe"] = ({"kind": "cpu-ops", "ops_per_block": 20, "blocks": 30,
                                              "median_s": probe_s, "q1_s": probe_s, "q3_s": probe_s}
                                             if probe else None)
    data["benchmarks"] = [row, device]
    return SavedRun(path, data)


def side(paths, hosts, slower: float = 1.0, probe: bool = True) -> list[SavedRun]:
    return [run_in_host_state(path, host, slower, probe) for path, host in zip(paths, hosts)]


def by_key(result):
    return {c.key: c for c in result.comparisons}


def test_slow_host_runs_are_set_aside_where_they_slow_the_row():
    """Two of six runs a side in the slow host mode (1.8x): the host-bound row is compared on its fast-host
    runs, the device-bound row on all runs (the baseline shows the slow state does not touch it)."""
    baseline = side(BASE[:6], [1, 1.8, 1, 1, 1.8, 1])
    new = side(BASE[6:12], [1.8, 1, 1, 1, 1, 1.8])
    result = compare_runs(baseline, new, SETTINGS)
    host_row, device_row = by_key(result)[HOST_BOUND], by_key(result)[DEVICE_BOUND]
    assert host_row.time.figure == FAST_HOST and (len(host_row.time.baseline), len(host_row.time.new)) == (4, 4)
    assert sorted((e.side, Path(e.run).name) for e in host_row.left_out) == [
        ("baseline", "base-02.json"), ("baseline", "base-05.json"), ("new", "base-07.json"), ("new", "base-12.json")]
    assert all("slow host state: host probe 1.80x the fastest run's (> 1.25x)" in e.reason for e in host_row.left_out)
    assert device_row.time.figure == ALL_RUNS and len(device_row.time.new) == 6 and not device_row.left_out
    assert result.outcome != "fail"
    text = render_result(result)
    assert "slow host state (> 1.25x the fastest): baseline base-02.json (1.80x)" in text
    assert ("4 slow-host run(s) set aside (baseline base-02.json, baseline base-05.json, new base-07.json, "
            "new base-12.json; see host probe)") in text
    data = json.loads(json.dumps(result.as_dict()))
    slow = {entry["run"].rsplit("/", 1)[-1] for entry in data["host_state"]["runs"] if entry["slow_host"]}
    assert slow == {"base-02.json", "base-05.json", "base-07.json", "base-12.json"}
    assert data["host_state"]["fastest_s"] == pytest.approx(PROBE_S * 1.005)  # median of the two rows
    (host_json,) = [b for b in data["benchmarks"] if b["key"] == HOST_BOUND]
    assert host_json["time"]["figure"] == FAST_HOST and len(host_json["left_out"]) == 4


def test_slow_host_state_does_not_pass_for_a_regression():
    """Without the probe, the new side's three slow-host runs would read as +80% on the host-bound row;
    with it they are set aside and the row is unchanged, while a real +30% is still called."""
    baseline = side(BASE[:6], [1, 1, 1.8, 1, 1, 1])
    unchanged = compare_runs(baseline, side(BASE[6:12], [1.8, 1, 1.8, 1, 1.8, 1]), SETTINGS)
    assert by_key(unchanged)[HOST_BOUND].verdict is not Verdict.REGRESSED and unchanged.outcome != "fail"
    blind = compare_runs(side(BASE[:6], [1, 1, 1.8, 1, 1, 1], probe=False),
                         side(BASE[6:12], [1.8, 1, 1.8, 1.8, 1.8, 1], probe=False), SETTINGS)
    assert by_key(blind)[HOST_BOUND].time.effect > 0.5  # what the slow host state does without the probe
    regressed = compare_runs(baseline, side(BASE[6:12], [1.8, 1, 1.8, 1, 1.8, 1], slower=1.3), SETTINGS)
    assert by_key(regressed)[HOST_BOUND].verdict is Verdict.REGRESSED
    assert by_key(regressed)[DEVICE_BOUND].verdict is Verdict.REGRESSED


def test_every_new_run_in_a_slow_host_state_is_undecided(capsys):
    """If the probe says every new run was slow (a bad host, or a change that slowed the host path
    itself), host-bound rows cannot be compared: could not tell, exit 3; the device-bound row still is."""
    baseline = side(BASE[:6], [1, 1.8, 1, 1, 1, 1])
    result = compare_runs(baseline, side(BASE[6:12], [1.8] * 6), SETTINGS)
    host_row, device_row = by_key(result)[HOST_BOUND], by_key(result)[DEVICE_BOUND]
    assert host_row.verdict is Verdict.INCONCLUSIVE and host_row.time is None
    assert "every new run landed in a slow host state: could not tell" in host_row.notes
    assert device_row.time.figure == ALL_RUNS and device_row.verdict is not Verdict.INCONCLUSIVE
    assert result.outcome == "undecided" and result.exit_code == 3


def test_probe_normalized_figure_where_the_host_state_is_not_two_modes():
    """A host whose speed varies from run to run (1.0-1.7x) and a row that follows it: too few fast-host
    baseline runs to judge, so the row is compared per probe, shown with the host-inclusive change."""
    hosts = [1, 1.3, 1.5, 1.7, 1.05, 1.4]
    result = compare_runs(side(BASE[:6], hosts), side(BASE[6:12], list(reversed(hosts)), slower=1.2), SETTINGS)
    host_row = by_key(result)[HOST_BOUND]
    assert host_row.time.figure == PER_PROBE and host_row.verdict is Verdict.REGRESSED
    assert host_row.time.baseline_compared[0] == pytest.approx(host_row.time.baseline[0] / PROBE_S)
    assert "compared per host probe (steadier in the baseline)" in render_result(result)


def test_the_figure_is_chosen_from_the_baseline_alone():
    """The same baseline against different new sides: the host-bound row's figure does not change."""
    baseline = side(BASE[:6], [1, 1.8, 1, 1, 1.8, 1])
    figures = {by_key(compare_runs(baseline, side(BASE[6:12], hosts, slower), SETTINGS))[HOST_BOUND].time.figure
               for hosts, slower in [([1, 1.8, 1, 1, 1, 1.8], 1.0), ([1.8, 1, 1, 1, 1, 1], 1.5),
                                     ([1, 1, 1, 1.8, 1, 1], 0.8)]}
    assert figures == {FAST_HOST}


def test_runs_without_a_probe_are_compared_as_before(tmp_path, capsys):
    result = compare_runs(side(BASE[:3], [1, 1, 1], probe=False), side(BASE[3:6], [1, 1, 1], probe=False), SETTINGS)
    assert result.host.fastest_s is None and all(c.time.figure == ALL_RUNS for c in result.comparisons)
    assert "host probe: not recorded" in render_result(result)
    assert main(["compare", str(BASE[0]), str(BASE[1]), "--host-slow", "0"]) == 2
    assert "host_slow 0.0%: must be above 0" in capsys.readouterr().err
