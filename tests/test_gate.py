"""The regression gate's decisions, on real saved runs.

The runs are the gate drill's (``docs/gate-drill/runs``): whole ``pytest benchmarks`` runs on the
CPU machine, eager fp32 batch 1, "base" and "slower" (real extra forward work, measured +10%).
Cases the drill did not produce (a skipped benchmark, another GPU, a throttled run, a memory jump)
are made by editing a copy of a real run the way the situation would change it.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from perfsuite.cli import main
from perfsuite.errors import InputError
from perfsuite.gate import store
from perfsuite.gate.hardware import fingerprint, mismatches
from perfsuite.gate.runs import load_run, load_side, resolve_side
from perfsuite.gate.settings import GateSettings, parse_fraction, settings_from_config
from perfsuite.gate.tables import render_result
from perfsuite.gate.verdict import (
    HardwareMismatch,
    Verdict,
    compare_runs,
    compare_times,
    shift_interval,
    smallest_p,
    u_null_counts,
    upper_critical_u,
)

RUNS = Path(__file__).resolve().parent.parent / "docs" / "gate-drill" / "session-1" / "runs"
BASE = sorted(RUNS.glob("base-*.json"))
SLOWER = sorted(RUNS.glob("slower-*.json"))
KEY = "benchmarks/test_latency.py::test_latency[eager-fp32-b1]"
SETTINGS = GateSettings()

pytestmark = pytest.mark.skipif(len(BASE) < 10 or len(SLOWER) < 5, reason="the gate drill's runs are not recorded")


def edited_copy(source: Path, target: Path, edit) -> Path:
    data = json.loads(source.read_text())
    edit(data)
    target.write_text(json.dumps(data))
    return target


def edited_runs(sources, folder: Path, edit) -> list:
    folder.mkdir(exist_ok=True)
    return [load_run(edited_copy(path, folder / path.name, edit)) for path in sources]


# -- statistics -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "n"), [(1, 1), (2, 3), (3, 3), (5, 5), (4, 7)])
def test_exact_u_distribution_matches_scipy(m, n):
    """Our null counts give scipy's exact one-sided p-value, for many random samples."""
    import math
    import random

    from scipy import stats

    counts = u_null_counts(m, n)
    assert sum(counts) == math.comb(m + n, m)
    rng = random.Random(m * 100 + n)
    for _ in range(30):
        x, y = [rng.random() for _ in range(m)], [rng.random() for _ in range(n)]
        result = stats.mannwhitneyu(x, y, alternative="greater", method="exact")
        assert sum(counts[int(result.statistic):]) / sum(counts) == pytest.approx(result.pvalue, rel=1e-12)


def test_critical_values_and_interval():
    assert smallest_p(3, 3) == pytest.approx(0.05)
    assert upper_critical_u(3, 3, 0.05) == 9  # all 9 pairs must agree
    assert upper_critical_u(2, 2, 0.05) is None  # 1/6 > 0.05: no test possible
    # 3 vs 3 at 0.05: the interval is [min, max] of the pairwise differences
    assert shift_interval([10, 11, 12], [0, 1, 2], 0.05) == (8, 12)


def test_effect_and_test_decide_together():
    base = [1.00, 1.01, 0.99, 1.02, 0.98]
    comparison, verdict, _ = compare_times(base, [v * 1.10 for v in base], SETTINGS)
    assert verdict is Verdict.REGRESSED and comparison.effect == pytest.approx(0.10)
    assert comparison.p_slower == pytest.approx(1 / 252)
    low, high = comparison.interval
    assert low < 0.10 < high
    # +3%: below the 5% effect size, unchanged even though every new run is slower
    assert compare_times(base, [v * 1.03 for v in base], SETTINGS)[1] is Verdict.UNCHANGED
    # +8% median but the runs overlap: not significant -> inconclusive, with the reason
    _, verdict, notes = compare_times(base, [0.99, 1.08, 1.09, 1.00, 1.10], SETTINGS)
    assert verdict is Verdict.INCONCLUSIVE and "not significant" in notes[0]
    assert compare_times(base, [v * 0.90 for v in base], SETTINGS)[1] is Verdict.IMPROVED


def test_one_run_needs_a_larger_effect():
    comparison, verdict, notes = compare_times([1.0], [1.10], SETTINGS)
    assert verdict is Verdict.INCONCLUSIVE and not comparison.testable and comparison.p_slower is None
    assert "15%" in notes[0]
    assert compare_times([1.0], [1.20], SETTINGS)[1] is Verdict.REGRESSED
    assert compare_times([1.0, 1.0], [1.03, 1.02], SETTINGS)[1] is Verdict.UNCHANGED


def test_without_a_test_noisier_runs_need_a_larger_change():
    # 2 + 2 runs whose baseline runs differ by 40% among themselves: a 25% change proves nothing
    _, verdict, notes = compare_times([1.0, 1.4], [1.5, 1.5], SETTINGS)
    assert verdict is Verdict.INCONCLUSIVE and "must exceed 40% (the spread of the baseline runs)" in notes[0]
    assert compare_times([1.0, 1.02], [1.25, 1.26], SETTINGS)[1] is Verdict.REGRESSED
    # one run each; the runs' own rounds scattered with CV 10%: 20% is within 3 x that
    _, verdict, notes = compare_times([1.0], [1.2], SETTINGS, within_run_cv=0.10)
    assert verdict is Verdict.INCONCLUSIVE and "3 x the within-run CV (10.0%)" in notes[0]
    assert compare_times([1.0], [1.2], SETTINGS, within_run_cv=0.02)[1] is Verdict.REGRESSED


def test_settings_from_pyproject_and_options():
    from perfsuite.config import SuiteConfig

    config = SuiteConfig(extra={"gate": {"threshold": "3%", "alpha": 0.01, "require_backends": ["eager"]}})
    settings = settings_from_config(config, {"threshold": "0.07", "statistic": None})
    assert settings.threshold == pytest.approx(0.07)  # the option wins over pyproject
    assert settings.alpha == 0.01 and settings.require_backends == ("eager",)
    assert parse_fraction("5%", "x") == pytest.approx(0.05)
    with pytest.raises(InputError, match=r"threshold.*not a fraction"):
        settings_from_config(config, {"threshold": "five"})
    with pytest.raises(InputError, match="unknown setting"):
        settings_from_config(SuiteConfig(extra={"gate": {"treshold": 0.05}}))
    with pytest.raises(InputError, match="larger effect"):
        GateSettings(threshold=0.2, single_run_threshold=0.1)


# -- on the drill's runs --------------------------------------------------------------------------


def medians_from_json(paths) -> list[float]:
    """Per-run medians read straight from the files, independently of the gate's loader."""
    return [json.loads(Path(p).read_text())["benchmarks"][0]["stats"]["median"] for p in paths]


def expected_verdict(base: list[float], new: list[float]) -> tuple[float, float, Verdict]:
    """The documented rule, computed from scratch: effect size and exact one-sided U test over runs."""
    from scipy import stats

    effect = statistics.median(new) / statistics.median(base) - 1
    p = stats.mannwhitneyu(new, base, alternative="greater" if effect > 0 else "less", method="exact").pvalue
    if abs(effect) <= SETTINGS.threshold:
        return effect, p, Verdict.UNCHANGED
    if p > SETTINGS.alpha:
        return effect, p, Verdict.INCONCLUSIVE
    return effect, p, Verdict.REGRESSED if effect > 0 else Verdict.IMPROVED


@pytest.mark.parametrize(("baseline", "new"), [
    (BASE[:5], BASE[5:10]),  # unchanged code, recorded later
    (BASE[0:10:2], BASE[1:10:2]),  # unchanged code, interleaved
    (BASE[:5], SLOWER[:5]),  # +10% forward work
    (BASE[5:10], SLOWER[5:10]),
    (BASE[:3], SLOWER[:4]),
], ids=["unchanged-later", "unchanged-interleaved", "slower-1", "slower-2", "slower-3v4"])
def test_verdict_on_real_runs_follows_the_rule(baseline, new):
    """On the drill's real runs the gate's numbers and verdict are exactly the documented rule."""
    base_values, new_values = medians_from_json(baseline), medians_from_json(new)
    effect, p, verdict = expected_verdict(base_values, new_values)
    result = compare_runs([load_run(x) for x in baseline], [load_run(x) for x in new], SETTINGS)
    (comparison,) = result.comparisons
    assert comparison.time.baseline == tuple(base_values) and comparison.time.new == tuple(new_values)
    assert comparison.time.effect == pytest.approx(effect, rel=1e-12)
    assert (comparison.time.p_slower if effect > 0 else comparison.time.p_faster) == pytest.approx(p, rel=1e-9)
    assert comparison.verdict is verdict, render_result(result)
    assert result.exit_code == (1 if verdict is Verdict.REGRESSED else 0)


def slowed(factor: float):
    def edit(data):
        for bench in data["benchmarks"]:
            for key in ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3"):
                bench["stats"][key] *= factor
            bench["stats"]["data"] = [v * factor for v in bench["stats"]["data"]]
    return edit


def test_a_clear_slowdown_of_real_runs_fails_the_gate(tmp_path):
    """Every new run 5x slower than the slowest baseline run's neighbourhood: complete separation."""
    base = [load_run(p) for p in BASE[:5]]
    new = edited_runs(BASE[5:10], tmp_path, slowed(5.0))
    result = compare_runs(base, new, SETTINGS)
    (comparison,) = result.comparisons
    assert comparison.verdict is Verdict.REGRESSED and comparison.time.p_slower == pytest.approx(1 / 252)
    assert result.exit_code == 1
    text = render_result(result)
    assert "FAIL" in text and "REGRESSED" in text and "test_latency[eager-fp32-b1]" in text
    same = compare_runs(base, base, SETTINGS)
    assert same.comparisons[0].verdict is Verdict.UNCHANGED and same.comparisons[0].time.effect == 0
    assert same.exit_code == 0


def test_single_run_comparison_says_so():
    result = compare_runs([load_run(BASE[0])], [load_run(SLOWER[0])], SETTINGS)
    (comparison,) = result.comparisons
    assert any("rests on one run" in note for note in comparison.notes)
    assert comparison.verdict in (Verdict.INCONCLUSIVE, Verdict.REGRESSED, Verdict.UNCHANGED)
    if comparison.verdict is Verdict.REGRESSED:  # only with a change beyond the single-run threshold
        assert comparison.time.effect > SETTINGS.single_run_threshold


def test_skipped_benchmark_in_new_run_fails_the_gate(tmp_path):
    def skip_it(data):
        data["benchmarks"] = []
        data["perfsuite"] = {"schema_version": 1, "outcomes": [
            {"nodeid": KEY, "outcome": "skipped", "when": "call", "reason": "eager: broken install"}]}

    new = edited_runs(BASE[5:8], tmp_path / "new", skip_it)
    result = compare_runs([load_run(p) for p in BASE[:3]], new, SETTINGS)
    (comparison,) = result.comparisons
    assert comparison.verdict is Verdict.MISSING and result.exit_code == 1
    assert "skipped in base-06.json: eager: broken install" in comparison.notes[0]


def test_missing_without_record_and_failed_test_fail_the_gate(tmp_path):
    def drop(data):
        data["benchmarks"] = []
        data.pop("perfsuite", None)

    new = edited_runs(BASE[5:6], tmp_path / "dropped", drop)
    (comparison,) = compare_runs([load_run(BASE[0])], new, SETTINGS).comparisons
    assert comparison.verdict is Verdict.MISSING and "skips not recorded" in comparison.notes[0]

    def fail(data):
        data["perfsuite"] = {"schema_version": 1, "outcomes": [
            {"nodeid": KEY, "outcome": "failed", "when": "call", "reason": "AssertionError: parity"}]}

    result = compare_runs([load_run(BASE[0])], edited_runs(BASE[5:6], tmp_path / "failed", fail), SETTINGS)
    assert result.comparisons[0].verdict is Verdict.FAILED and result.exit_code == 1


def test_required_backend(tmp_path):
    runs = [load_run(p) for p in BASE[:3]]
    ok = compare_runs(runs, runs, GateSettings(require_backends=("eager",)))
    assert not ok.backend_failures
    result = compare_runs(runs, [load_run(p) for p in BASE[3:6]], GateSettings(require_backends=("onnxruntime",)))
    assert result.exit_code == 1 and "required backend onnxruntime has no results" in result.backend_failures[0]


def throttled(data):
    data["benchmarks"][0]["extra_info"]["gpu_telemetry"] = {
        "before": {}, "after": {}, "throttled": True, "throttle_reasons": ["hw_thermal_slowdown"],
        "contended": False, "other_processes": 0}


def cpu_shared(data):
    data["benchmarks"][0]["extra_info"]["host_telemetry"] = {
        "wall_s": 1.0, "cpu_count": 2, "own_cpu_s": 1.0, "other_cpu_s": 0.9, "other_cpu_fraction": 0.45}


def test_spoiled_runs_are_left_out(tmp_path):
    base = [load_run(p) for p in BASE[:5]]
    clear = edited_runs(BASE[5:10], tmp_path / "slower", slowed(5.0))
    one_shared = [*clear[:4], *edited_runs([clear[4].path], tmp_path / "shared", cpu_shared)]
    (comparison,) = compare_runs(base, one_shared, SETTINGS).comparisons
    assert len(comparison.time.new) == 4 and comparison.verdict is Verdict.REGRESSED
    assert any("left out: other processes used 45% of the CPU (> 10%)" in note for note in comparison.notes)


def test_mostly_throttled_or_shared_is_inconclusive(tmp_path):
    base = [load_run(p) for p in BASE[:5]]
    clear = edited_runs(BASE[5:10], tmp_path / "slower", slowed(5.0))
    spoiled = [*clear[:2], *edited_runs([r.path for r in clear[2:4]], tmp_path / "hot", throttled),
               *edited_runs([clear[4].path], tmp_path / "shared", cpu_shared)]
    (comparison,) = compare_runs(base, spoiled, SETTINGS).comparisons
    assert comparison.verdict is Verdict.INCONCLUSIVE  # 5x slower, but measured on a hot, shared machine
    assert any("GPU throttled (hw_thermal_slowdown)" in note for note in comparison.notes)
    assert any("3 of 5 new runs were throttled or shared their machine" in note for note in comparison.notes)
    # the threshold is a setting: at 50% the shared run counts again, 2 of 5 spoiled is not a majority
    (lenient,) = compare_runs(base, spoiled, GateSettings(host_contention=0.5)).comparisons
    assert lenient.verdict is Verdict.REGRESSED and len(lenient.time.new) == 3


def test_memory_growth_regresses(tmp_path):
    def grow(data):
        data["benchmarks"][0]["extra_info"]["host_rss_delta_bytes"] += 512 * 1024 * 1024

    result = compare_runs([load_run(p) for p in BASE[:3]], edited_runs(BASE[3:6], tmp_path, grow), SETTINGS)
    (comparison,) = result.comparisons
    memory = {m.metric: m for m in comparison.memory}
    assert memory["host_rss_delta_bytes"].verdict is Verdict.REGRESSED
    assert comparison.failing and result.exit_code == 1
    assert "MEMORY REGRESSED" in render_result(result)


# -- hardware --------------------------------------------------------------------------------------


def as_gpu(name: str, power: int = 700):
    def edit(data):
        data["machine_info"]["perfsuite"].update(
            device="cuda", gpu_name=name, compute_capability="9.0", gpu_memory_bytes=85_024_112_640,
            power_limit_w=power, mig_mode="disabled", driver="580.65", torch="2.11.0")
    return edit


def test_fingerprint_of_real_cpu_run():
    run = load_run(BASE[0])
    assert run.fingerprint.kind == "cpu"
    assert run.fingerprint.as_dict() == {"cpu_model": run.machine_info["perfsuite"]["cpu_model"],
                                         "cpu_count": run.machine_info["perfsuite"]["cpu_count"]}
    assert run.fingerprint.id.startswith("cpu-") and run.fingerprint == load_run(BASE[1]).fingerprint


def test_gpu_runs_compare_only_on_the_same_gpu(tmp_path):
    h100 = edited_runs(BASE[:3], tmp_path / "h100", as_gpu("NVIDIA H100 80GB HBM3"))
    h100_capped = edited_runs(BASE[3:6], tmp_path / "capped", as_gpu("NVIDIA H100 80GB HBM3", power=500))
    assert h100[0].fingerprint.kind == "gpu" and h100[0].fingerprint.as_dict()["gpu_memory_gib"] == 79
    assert mismatches(h100[0].fingerprint, h100_capped[0].fingerprint) == [("power_limit_w", 700, 500)]
    with pytest.raises(HardwareMismatch, match=r"power_limit_w\s+700\s+500") as error:
        compare_runs(h100, h100_capped, SETTINGS)
    assert error.value.rows == [("power_limit_w", 700, 500)]
    result = compare_runs(h100, h100_capped, SETTINGS, allow_hardware_mismatch=True)
    assert result.hardware_mismatch == [("power_limit_w", 700, 500)]
    assert "numbers not comparable" in render_result(result)
    cpu = [load_run(BASE[6])]
    assert ("device", "gpu", "cpu") in mismatches(h100[0].fingerprint, cpu[0].fingerprint)


def test_software_differences_are_the_change_under_test(tmp_path):
    def upgrade(data):
        data["machine_info"]["perfsuite"]["torch"] = "2.99.0"

    result = compare_runs([load_run(p) for p in BASE[:3]], edited_runs(BASE[3:6], tmp_path, upgrade), SETTINGS)
    assert result.software_changes == [("torch", load_run(BASE[0]).software["torch"], "2.99.0")]
    text = render_result(result, markdown=True)
    assert "change under test" in text and "2.99.0" in text


def test_foreign_pytest_benchmark_run_uses_its_cpu_fields(tmp_path):
    def strip(data):
        del data["machine_info"]["perfsuite"]
        data.pop("perfsuite", None)

    (run,) = edited_runs(BASE[:1], tmp_path, strip)
    assert run.fingerprint.source == "pytest-benchmark"
    assert run.fingerprint.as_dict()["cpu_count"] == fingerprint(load_run(BASE[0]).machine_info).as_dict()[
        "cpu_count"]


# -- loading: bad input gets a clear error naming the file -------------------------------------------


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"),
    (b"\xff\xfe\x00garbage", "not text"),
    (b'{"machine_info": {}, "benchmarks": [', "not valid JSON, truncated or corrupt"),
    (b'[1, 2, 3]', "not a pytest-benchmark results file"),
    (b'{"name": "left-pad", "version": "1.3.0"}', "not a pytest-benchmark results file"),
    (b'{"benchmarks": [{"name": "x", "stats": {"median": "fast", "mean": 1, "stddev": 0, "rounds": 1}}]}',
     r"benchmarks\[0\]\.stats\.median: 'fast' is not of type 'number'"),
    (b'{"benchmarks": [{"name": "x", "stats": {"median": 1, "mean": 1, "stddev": 0, "rounds": 1},'
     b' "extra_info": {"schema_version": 99}}]}', "newer than this perfsuite understands"),
])
def test_bad_files_are_refused_by_name(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as error:
        load_run(path)
    assert str(path) in str(error.value)


def test_truncated_real_run(tmp_path):
    text = BASE[0].read_text()
    path = tmp_path / "truncated.json"
    path.write_text(text[: len(text) // 2])
    with pytest.raises(InputError, match=r"truncated.json: not valid JSON, truncated or corrupt"):
        load_run(path)


def test_cli_names_the_bad_file_without_traceback(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"benchmarks": [{"name": ')
    assert main(["compare", str(corrupt), str(BASE[0])]) == 2
    err = capsys.readouterr().err
    assert f"perfsuite compare: error: results file {corrupt}" in err and "Traceback" not in err
    assert main(["compare", str(tmp_path / "nowhere.json"), str(BASE[0])]) == 2
    assert "no pytest-benchmark run with that id" in capsys.readouterr().err


def test_sides_by_path_list_folder_glob_and_storage_id(tmp_path):
    storage = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit"
    storage.mkdir(parents=True)
    (storage / "0001_abc_20261127_uncommited-changes.json").write_text(BASE[0].read_text())
    (storage / "0002_abc_20261127_uncommited-changes.json").write_text(BASE[1].read_text())
    assert resolve_side("0002", tmp_path / ".benchmarks") == [storage / "0002_abc_20261127_uncommited-changes.json"]
    assert len(resolve_side("Linux-CPython-3.11-64bit/000", tmp_path / ".benchmarks")) == 2
    assert resolve_side(f"{BASE[0]},{BASE[1]}") == BASE[:2]
    assert resolve_side(str(RUNS / "base-0[1-3].json")) == BASE[:3]
    assert len(resolve_side(str(RUNS))) == len(BASE) + len(SLOWER)
    with pytest.raises(InputError, match="the glob matches no file"):
        resolve_side(str(RUNS / "nothing-*.json"))


def test_cli_gate_exit_codes_and_outputs(tmp_path, capsys):
    base = ",".join(map(str, BASE[:5]))
    slower = edited_runs(BASE[5:10], tmp_path / "slower", slowed(5.0))
    slower = ",".join(str(r.path) for r in slower)
    summary, as_json = tmp_path / "summary.md", tmp_path / "result.json"
    assert main(["compare", base, slower, "--summary", str(summary), "--json", str(as_json)]) == 1
    assert "REGRESSED" in capsys.readouterr().out
    assert summary.read_text().startswith("### perfsuite compare: FAIL")
    assert json.loads(as_json.read_text())["counts"]["regressed"] == 1
    assert main(["compare", base, base, "--format", "markdown"]) == 0
    assert "| test_latency[eager-fp32-b1] |" in capsys.readouterr().out
    # a fivefold slowdown is not "regressed" if the user only cares about changes above 1000%
    assert main(["compare", base, slower, "--threshold", "1000%"]) == 0


# -- baseline store ---------------------------------------------------------------------------------


def test_baseline_store_roundtrip_and_tamper_check(tmp_path, capsys):
    root = tmp_path / "baselines"
    folder = store.save_baseline(root, [load_run(p) for p in BASE[:3]])
    assert folder.name == load_run(BASE[0]).fingerprint.id
    assert len(load_side(str(folder))) == 3
    folder = store.save_baseline(root, [load_run(p) for p in BASE[3:8]])  # replaces the whole baseline
    assert sorted(p.name for p in folder.glob("run-*.json")) == [f"run-0{i}.json" for i in range(1, 6)]
    assert [b.manifest["fingerprint_id"] for b in store.list_baselines(root)] == [folder.name]
    assert not [p for p in root.glob(".*") if p.is_dir()]  # no staging or retired folders left behind

    data = json.loads((folder / "run-02.json").read_text())
    data["benchmarks"][0]["stats"]["median"] *= 0.5
    (folder / "run-02.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"run-02\.json changed after it was recorded"):
        load_side(str(folder))
    (folder / "run-02.json").unlink()
    with pytest.raises(InputError, match=r"run-02\.json is listed in baseline\.json but missing"):
        load_side(str(folder))


def test_baseline_refuses_mixed_hardware(tmp_path):
    mixed = [load_run(BASE[0]), *edited_runs(BASE[1:2], tmp_path / "gpu", as_gpu("NVIDIA H200"))]
    with pytest.raises(InputError, match="different hardware"):
        store.save_baseline(tmp_path / "baselines", mixed)


def test_cli_baseline_save_then_compare(tmp_path, capsys):
    root = tmp_path / "baselines"
    assert main(["baseline", "save", ",".join(map(str, BASE[:5])), "--store", str(root)]) == 0
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    slower = ",".join(str(r.path) for r in edited_runs(BASE[5:10], tmp_path / "slower", slowed(5.0)))
    assert main(["compare", str(folder), slower]) == 1
    assert main(["baseline", "list", "--store", str(root)]) == 0
    assert folder.name in capsys.readouterr().out


def test_gate_result_is_plain_data():
    result = compare_runs([load_run(p) for p in BASE[:3]], [load_run(p) for p in SLOWER[:3]], SETTINGS)
    data = json.loads(json.dumps(result.as_dict()))  # raises TypeError on anything but plain JSON types
    assert data["benchmarks"][0]["time"]["new"] == list(result.comparisons[0].time.new)


@pytest.mark.parametrize("section,message", [
    ({"memory_floor_mib": "lots"}, r"\[tool\.perfsuite\.gate\] memory_floor_mib: 'lots' is not a number"),
    ({"require_backends": 5}, r"\[tool\.perfsuite\.gate\] require_backends: 5 is not a list"),
    ({"fail_on_inconclusive": "false"}, r"\[tool\.perfsuite\.gate\] fail_on_inconclusive: 'false' is not true"),
    ({"threshold": "five"}, r"\[tool\.perfsuite\.gate\] threshold"),
])
def test_bad_gate_settings_name_their_source(section, message):
    from perfsuite.config import SuiteConfig

    config = SuiteConfig(extra={"gate": section})
    # The CLI passes every option, unset ones as None: those must not take the blame.
    with pytest.raises(InputError, match=message):
        settings_from_config(config, {key: None for key in ("threshold", "memory_floor_mib", "require_backends")})
