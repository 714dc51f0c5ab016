"""Runs and options the gate must refuse rather than judge (issue 16): an option naming nothing, a run
without machine_info or extra_info, a row of an unknown kind or whose parity failed unrecorded, a failed
run stored as a baseline, a store that is a file. Real run files (the CPU gate drill's), edited copies,
the commands' own ``main`` in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfsuite.cli import main

ROOT = Path(__file__).resolve().parent.parent
DRILL = ROOT / "docs" / "gate-drill" / "session-1" / "runs"


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """Copies of four drill runs (two a side) in tmp_path, which is also the working folder."""
    monkeypatch.chdir(tmp_path)
    for index in range(1, 5):
        (tmp_path / f"run-{index}.json").write_text((DRILL / f"base-0{index}.json").read_text())
    return tmp_path


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


BASE, NEW = "run-1.json,run-2.json", "run-3.json,run-4.json"


@pytest.mark.parametrize("value", ["", ",", " , "])
def test_an_empty_require_backends_is_refused_not_a_dropped_requirement(runs, capsys, value):
    """issue 16: with require_backends = ["tensorrt"] configured, --require-backends '' passed the gate."""
    (runs / "pyproject.toml").write_text('[tool.perfsuite.gate]\nrequire_backends = ["tensorrt"]\n')
    assert main(["compare", BASE, NEW]) == 1  # the configured requirement fails these CPU runs
    capsys.readouterr()
    assert main(["compare", BASE, NEW, "--require-backends", value]) == 2
    assert f"--require-backends {value!r}: names nothing" in capsys.readouterr().err


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("machine_info"), "run-3.json: no machine_info"),
    (lambda d: d["benchmarks"][0].pop("extra_info"), "extra_info is missing, where"),
    (lambda d: d["benchmarks"][0]["extra_info"].pop("kind"), "extra_info.kind is missing, where"),
    (lambda d: d["benchmarks"][0]["extra_info"].update(kind="teleport"), "extra_info.kind 'teleport' is not a kind"),
    (lambda d: d["benchmarks"][0]["extra_info"]["parity"].update(passed=False), "extra_info.parity.passed is false"),
], ids=["no-machine-info", "no-extra-info", "no-kind", "unknown-kind", "parity-failed-unrecorded"])
def test_a_run_the_gate_cannot_judge_is_refused(runs, capsys, change, message):
    """issue 16: these runs were compared without a word (PASS or exit 3)."""
    _edit(runs / "run-3.json", change)
    assert main(["compare", BASE, NEW]) == 2
    err = capsys.readouterr().err
    assert message in err and "run-3.json" in err


def test_a_parity_failure_the_run_recorded_fails_the_row_not_the_input(runs, capsys):
    def failed(data):
        row = data["benchmarks"][0]
        row["extra_info"]["parity"]["passed"] = False
        data["perfsuite"]["outcomes"].append({"nodeid": row["fullname"], "outcome": "failed", "when": "call",
                                              "reason": "AssertionError: parity"})
    _edit(runs / "run-3.json", failed)
    assert main(["compare", BASE, NEW]) == 1


def test_baseline_save_refuses_a_failed_run_and_one_without_latency_rows(runs, capsys):
    """issue 16: a run whose latency test failed, with no latency row, was stored ("1 runs stored")."""
    def no_latency(data):
        nodeid = data["benchmarks"][0]["fullname"]
        data["benchmarks"] = []
        data["perfsuite"]["outcomes"].append({"nodeid": nodeid, "outcome": "failed", "when": "call",
                                              "reason": "AssertionError: parity"})
    _edit(runs / "run-1.json", no_latency)
    assert main(["baseline", "save", "run-1.json", "--store", "store"]) == 2
    assert "run-1.json: no latency row" in capsys.readouterr().err
    assert not (runs / "store").exists() or not any(p.is_dir() for p in (runs / "store").iterdir())

    _edit(runs / "run-2.json", lambda d: d["perfsuite"]["outcomes"].append(
        {"nodeid": "benchmarks/test_startup.py::test_cold_start[eager-fp32-b1]", "outcome": "failed"}))
    assert main(["baseline", "save", "run-2.json", "--store", "store"]) == 2
    assert "test_cold_start[eager-fp32-b1] failed in this run; not stored" in capsys.readouterr().err
    assert main(["baseline", "save", "run-2.json", "--store", "store", "--allow-failures"]) == 0


def test_baseline_list_of_a_file_is_refused(runs, capsys):
    """issue 16: baseline list --store FILE exited 0."""
    assert main(["baseline", "list", "--store", "run-1.json"]) == 2
    assert "--store run-1.json: is a file, not a baseline store" in capsys.readouterr().err


def test_empty_device_and_weights_are_refused(runs, capsys, monkeypatch):
    """issue 16: --device '' ran on the default device; PERFSUITE_WEIGHTS= fell back to random weights."""
    image = str(ROOT / "fixtures" / "dog.jpg")
    assert main(["predict", image, "--device", "", "--weights", "random"]) == 2
    assert "--device '': names nothing" in capsys.readouterr().err
    monkeypatch.setenv("PERFSUITE_WEIGHTS", "")
    assert main(["predict", image, "--device", "cpu"]) == 2
    assert "$PERFSUITE_WEIGHTS is set but empty" in capsys.readouterr().err
    assert main(["predict", image, "--device", "cpu", "--weights", ""]) == 2
    assert "--weights '': names nothing" in capsys.readouterr().err


def test_report_refuses_an_implausible_time(runs, capsys):
    """issue 16: report published a median of 1e+300 s without a word."""
    def absurd(data):
        data["benchmarks"][0]["stats"]["median"] = 1e300
    _edit(runs / "run-1.json", absurd)
    assert main(["report", "run-1.json", "--output", "out", "--no-charts"]) == 2
    assert "run-1.json: benchmark benchmarks/test_latency.py::test_latency[eager-fp32-b1]: stats.median is 1e+300 s" \
        in capsys.readouterr().err
    assert not (runs / "out" / "summary.md").exists()
