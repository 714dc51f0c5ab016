"""The pytest plugin as users meet it: tiers, the plan, skip reasons, serializable parameters."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from child_process import CommandResult, child_env, read_child_json, run_modules_in_one_child

ROOT = Path(__file__).resolve().parent.parent


def _pytest(*arguments: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *arguments], cwd=cwd,
                          capture_output=True, text=True, env=child_env(PERFSUITE_WEIGHTS="random"), timeout=600,
                          check=False)


# Command lines that only collect (or stop at a usage error), run in one Python child (tests/child_process.py)
# by the tests that take the fixture below: one torch import instead of eight.
COLLECTIONS = {
    "gate tier": ["benchmarks", "--collect-only", "-q", "--device", "cpu", "--batch-sizes", "1"],
    "e2e": ["benchmarks", "--collect-only", "-q", "-m", "e2e", "--device", "cpu", "--batch-sizes", "1"],
    "ladder": ["benchmarks", "--collect-only", "-q", "-m", "ladder", "--device", "cpu", "--batch-sizes", "1"],
    "tier file": ["benchmarks/test_e2e.py", "--collect-only", "-q", "--device", "cpu", "--batch-sizes", "1"],
    "e2e batches": ["benchmarks/test_e2e.py", "--collect-only", "-q", "-m", "e2e", "--batch-sizes", "1,8,64,256",
                    "--device", "cpu"],
    "tests": ["tests/test_golden.py", "--collect-only", "-q", "--device", "cpu"],
    "slow tests": ["tests/test_golden.py", "--collect-only", "-q", "-m", "slow", "--device", "cpu"],
    "affinity": ["benchmarks/test_latency.py", "--collect-only", "--cpu-affinity", "9999", "--device", "cpu"],
}


@pytest.fixture(scope="module")
def collected() -> dict[str, CommandResult]:
    calls = [(ROOT, "pytest", ["-p", "no:cacheprovider", *arguments]) for arguments in COLLECTIONS.values()]
    results = run_modules_in_one_child(calls, env=child_env(PERFSUITE_WEIGHTS="random"))
    return dict(zip(COLLECTIONS, results, strict=True))


def _collected(output: str) -> tuple[int, int]:
    line = next(line for line in output.splitlines() if "collected" in line and "tests" in line)
    selected, total = line.split()[0].split("/") if "/" in line.split()[0] else (line.split()[0], line.split()[0])
    return int(selected), int(total)


def test_the_default_run_is_the_gate_tier(collected):
    """Latency, model load and cold start only; e2e and ladder rows are there, deselected."""
    result = collected["gate tier"]
    assert result.returncode == 0, result.stdout + result.stderr
    names = [line for line in result.stdout.splitlines() if "::" in line]
    assert names and all(("test_latency" in n or "test_model_load" in n or "test_cold_start" in n) for n in names)
    selected, total = _collected(result.stdout)
    assert selected == len(names) < total


@pytest.mark.parametrize(("marker", "test_name"), [("e2e", "test_e2e"), ("ladder", "test_roofline_rates")])
def test_opt_in_tiers_run_when_named(collected, marker, test_name):
    result = collected[marker]
    names = [line for line in result.stdout.splitlines() if "::" in line]
    assert any(test_name in n for n in names) and not any("test_latency" in n for n in names)


def test_a_tier_file_named_on_the_command_line_runs(collected):
    result = collected["tier file"]
    assert any("test_e2e[" in line for line in result.stdout.splitlines()), result.stdout


def test_e2e_never_decodes_large_batches(collected):
    result = collected["e2e batches"]
    cases = [line for line in result.stdout.splitlines() if "test_e2e[" in line]
    assert cases and all("-b64-" not in c and "-b256-" not in c for c in cases)
    assert any("-b8-" in c for c in cases)


def test_slow_tests_are_opt_in(collected):
    default, slow = collected["tests"], collected["slow tests"]
    default_names = [line for line in default.stdout.splitlines() if "::" in line]
    slow_names = [line for line in slow.stdout.splitlines() if "::" in line]
    assert slow_names and all("compile" in n for n in slow_names)
    assert not any("[compile" in n for n in default_names)


def test_a_run_prints_its_plan_and_skip_reasons_and_stores_separate_params(tmp_path, monkeypatch):
    """Rows carry backend, precision and batch_size as separate params (every row, model load too), so that
    pytest-benchmark's own compare groups by any of them and its CSV has a column each."""
    # As in an xdist worker (pytest tests -n 8 on the GPU machine): the child must not inherit the worker's
    # variables, or pytest-benchmark disables itself there and writes no JSON (an empty file, 5.2).
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    output = tmp_path / "run.json"
    result = _pytest("benchmarks/test_latency.py", "benchmarks/test_startup.py::test_model_load", "--device", "cpu",
                     "--backends", "eager,onnxruntime", "--precisions", "fp32,bf16", "--batch-sizes", "1",
                     "--benchmark-max-time", "0.01", "--benchmark-min-rounds", "2", "--benchmark-json", str(output),
                     "--benchmark-group-by", "param:backend,param:precision", "-k", "not eager-bf16")
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "perfsuite plan: 3 benchmark(s) to run (latency 2, model_load 1), 1 to skip" in text
    assert "SKIPPED" in text and "bf16" in text  # ORT's bf16 skip reason, without -rs
    assert "UNSERIALIZABLE" not in text
    assert "benchmark 'backend=eager precision=fp32'" in text
    # issue 17: a measured estimate, then one progress line per benchmark as it finishes
    assert re.search(r"perfsuite plan: about \d+ s in all, from what was timed here just now \(model load", text)
    progress = re.findall(r"^perfsuite: \[(\d)/(\d)\] (\S+ ?\S*): (median [\d.]+ m?s|skipped); \d+ s so far, "
                          r"about \d+ s left$", result.stdout, re.MULTILINE)
    assert len(progress) == int(progress[0][1]) == 3, result.stdout
    data = read_child_json(output, result)
    params = {row["name"]: row["params"] for row in data["benchmarks"]}
    assert params["test_latency[eager-fp32-b1]"] == {"backend": "eager", "precision": "fp32", "batch_size": 1}
    assert params["test_model_load"] == {"backend": "eager", "precision": "fp32", "batch_size": None}
    row = next(r for r in data["benchmarks"] if r["name"] == "test_latency[eager-fp32-b1]")
    assert row["extra_info"]["host_probe"]["blocks"] == row["stats"]["rounds"]
    assert data["perfsuite"]["host_probe"]["rows"] == len(data["benchmarks"])
    # pytest-benchmark's compare on the saved run: grouped by a param, and a CSV column per param
    histogram = [f"--histogram={tmp_path / 'hist'}"] if _histogram_works() else []  # the report extra brings it
    compare = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(output),
                              "--group-by=param:precision", f"--csv={tmp_path / 'rows'}", *histogram],
                             capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    assert "benchmark 'precision=fp32'" in compare.stdout
    header = next(tmp_path.glob("rows*.csv")).read_text().splitlines()[0].split(",")
    assert {"param:backend", "param:precision", "param:batch_size"} <= set(header)
    assert not histogram or list(tmp_path.glob("hist*precision=fp32*.svg"))


def _histogram_works() -> bool:
    """pytest-benchmark's --histogram imports pygal and its own needs (pygaljs; importlib_metadata on some
    Pythons): installed by perfsuite's report extra; an image carrying pygal alone lacks them."""
    try:
        import pytest_benchmark.histogram  # noqa: F401
    except ImportError:
        return False
    return True


def test_a_bad_cpu_affinity_is_a_usage_error(collected):
    result = collected["affinity"]
    assert result.returncode == 4
    assert "--cpu-affinity 9999" in result.stderr and "Traceback" not in result.stderr


def test_non_native_cpu_precisions_are_left_out_by_default_and_run_when_asked():
    """issue 17: the default CPU run spent minutes on emulated fp16/bf16; --precisions still runs them."""
    from perfsuite.plugin import default_precision_skips

    skipped = default_precision_skips(("fp32", "fp16", "bf16"), "cpu")
    default = _pytest("benchmarks", "--collect-only", "--device", "cpu", "--batch-sizes", "1")
    asked = _pytest("benchmarks", "--collect-only", "--device", "cpu", "--batch-sizes", "1",
                    "--precisions", "fp32,bf16")
    assert default.returncode == asked.returncode == 0, default.stderr + asked.stderr
    assert "precisions=fp32,bf16 batch_sizes=1" in asked.stdout and "skipped by default" not in asked.stdout
    if skipped:
        assert f"(skipped by default here: {','.join(skipped)})" in default.stdout
    else:
        assert "skipped by default" not in default.stdout
