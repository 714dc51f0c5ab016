"""Recording whole runs: fresh pytest processes, skips and failures kept in the saved JSON.

Runs a tiny benchmark file (not AlexNet: the subject here is the recording, and it keeps each
run to a few seconds) through ``perfsuite baseline record`` with the perfsuite plugin loaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from child_process import child_env

from perfsuite.cli import main
from perfsuite.errors import InputError
from perfsuite.gate.record import pytest_arguments, record_runs
from perfsuite.gate.runs import load_run
from perfsuite.gate.store import list_baselines

TESTS = textwrap.dedent('''
    import pytest

    def test_sums(benchmark):
        benchmark(sum, range(1000))

    def test_backend_missing(benchmark):
        pytest.skip("xyz: libxyz not installed (pip install 'perfsuite[xyz]')")

    def test_parity_broken(benchmark):
        benchmark(sum, range(10))
        assert 1 + 1 == 3, "parity against eager failed"
''')


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("record")
    (folder / "test_tiny.py").write_text(TESTS)
    (folder / "runs").mkdir()
    (folder / "runs" / ".run-05.json.partial").write_text('{"benchmarks": [')  # left by a killed recorder
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the recorder's own lines (the children write to the fd)
        code = main(["baseline", "record", "--runs", "2", "--output", str(folder / "runs"), "--",
                     str(folder / "test_tiny.py"), "-p", "perfsuite.plugin", "-q", "-p", "no:cacheprovider",
                     "--benchmark-min-rounds", "3", "--benchmark-max-time", "0.01"])
    (folder / "recorder-output.txt").write_text(printed.getvalue())
    return folder, code


def test_runs_are_written_and_complete(recorded):
    folder, code = recorded
    assert code == 0  # --output mode: failures are for compare to judge
    runs = [load_run(folder / "runs" / f"run-0{i}.json") for i in (1, 2)]
    assert not list((folder / "runs").glob(".*partial"))
    for run in runs:
        assert any(key.endswith("::test_sums") for key in run.benchmarks)
        assert run.machine_info["perfsuite"]["device"] in ("cpu", "cuda")


def test_the_recorder_says_run_k_of_n_as_it_goes(recorded):
    """issue 17: a line when each run starts and when it ends, with the time so far and an estimate left."""
    folder, _ = recorded
    printed = (folder / "recorder-output.txt").read_text()
    assert "perfsuite: run 1 of 2: " in printed and "perfsuite: run 2 of 2: " in printed
    assert re.search(r"perfsuite: run 1 of 2 done \(exit 1\), run-01\.json; \d+ s so far; about \d+ s left", printed)
    assert re.search(r"perfsuite: run 2 of 2 done \(exit 1\), run-02\.json; \d+ s so far$", printed, re.MULTILINE)


def test_skips_and_failures_are_recorded_with_reasons(recorded):
    folder, _ = recorded
    outcomes = json.loads((folder / "runs" / "run-01.json").read_text())["perfsuite"]["outcomes"]
    by_test = {entry["nodeid"].split("::")[-1]: entry for entry in outcomes}
    assert by_test["test_backend_missing"]["outcome"] == "skipped"
    assert by_test["test_backend_missing"]["reason"] == "xyz: libxyz not installed (pip install 'perfsuite[xyz]')"
    assert by_test["test_parity_broken"]["outcome"] == "failed"
    assert "parity against eager failed" in by_test["test_parity_broken"]["reason"]
    assert "test_sums" not in by_test


def test_failed_test_fails_the_gate(recorded, capsys):
    folder, _ = recorded
    runs = folder / "runs"
    assert main(["compare", str(runs / "run-01.json"), str(runs / "run-02.json")]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "parity against eager failed" in out


def test_store_refuses_a_baseline_with_failing_tests(recorded, capsys):
    folder, _ = recorded
    store = folder / "baselines"
    code = main(["baseline", "record", "--runs", "1", "--store", str(store), "--", str(folder / "test_tiny.py"),
                 "-p", "no:cacheprovider", "-q", "--benchmark-max-time", "0.01"])
    assert code == 1 and list_baselines(store) == []
    assert not [p for p in store.iterdir() if p.is_dir()]  # its recording folder is gone too
    assert "baseline not stored" in capsys.readouterr().err


def test_a_run_without_json_is_an_error(tmp_path):
    (tmp_path / "test_skips.py").write_text("import pytest\n\ndef test_x(benchmark):\n    pytest.skip('no GPU')\n")
    with pytest.raises(InputError, match=r"run 1: pytest exited 0 without writing \.run-01\.json\.partial"):
        record_runs(1, tmp_path / "runs", [str(tmp_path / "test_skips.py"), "-q", "-p", "no:cacheprovider"])
    assert not list((tmp_path / "runs").iterdir())  # not even the empty file some pytest-benchmarks open


def test_default_target_is_the_benchmarks_folder():
    assert pytest_arguments(["--backends", "eager"]) == ["benchmarks", "--backends", "eager"]
    assert pytest_arguments(["--", "benchmarks/test_latency.py::test_latency", "-q"]) == [
        "benchmarks/test_latency.py::test_latency", "-q"]


SLEEPY = textwrap.dedent('''
    import time
    from pathlib import Path

    def test_sleeps(benchmark, request):
        # The partial file exists before the recorder is killed, on every machine however fast: as when
        # pytest-benchmark 5.2 opens it at startup, or any version is killed while writing it.
        output = request.config.getoption("benchmark_json")  # a path, or (5.2) the file it opened
        Path(output if isinstance(output, (str, Path)) else output.name).write_text('{"benchmarks": [')
        Path(__file__).with_name("started").touch()
        time.sleep(60)
        benchmark(time.sleep, 0.001)
''')


def start_recorder(tmp_path: Path, *where: str) -> tuple[subprocess.Popen, psutil.Process]:
    """``perfsuite baseline record`` of the sleepy test, once its pytest child is inside that test."""
    (tmp_path / "test_sleepy.py").write_text(SLEEPY)
    command = [sys.executable, "-m", "perfsuite", "baseline", "record", "--runs", "2", *where, "--",
               str(tmp_path / "test_sleepy.py"), "-q", "-p", "no:cacheprovider"]
    recorder = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=child_env())
    return recorder, pytest_child(recorder, tmp_path / "started")


def pytest_child(recorder: subprocess.Popen, started: Path) -> psutil.Process:
    """The recorder's pytest child, once it is inside the sleeping test."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        children = psutil.Process(recorder.pid).children()
        if started.exists() and children:
            return children[0]
        if recorder.poll() is not None:
            raise AssertionError("the recorder ended before its child started: " + "".join(recorder.communicate()))
        time.sleep(0.1)
    raise AssertionError("the pytest child did not start within 120 s")


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "mode"), [(signal.SIGKILL, "store"), (signal.SIGTERM, "store"),
                                              (signal.SIGINT, "output"), (signal.SIGKILL, "output")])
def test_a_killed_recorder_takes_its_pytest_child_and_leaves_nothing(tmp_path, signum, mode):
    """Killed while its child's partial JSON exists (the later instant; issue 15: on the GPU machine a
    SIGKILL left ``.run-01.json.partial``), the recorder leaves nothing, or (SIGKILL, which nothing can
    catch) what the next use of the folder or store deletes."""
    store, output = tmp_path / "baselines", tmp_path / "runs"
    recorder, child = start_recorder(tmp_path, *(["--store", str(store)] if mode == "store" else
                                                 ["--output", str(output)]))
    assert "pytest" in " ".join(child.cmdline())
    assert len(list(tmp_path.rglob(".run-01.json.partial"))) == 1  # the kill lands while the partial file exists
    os.kill(recorder.pid, signum)
    _, err = recorder.communicate(timeout=60)
    _, alive = psutil.wait_procs([child], timeout=10)
    assert not alive, f"the pytest child outlived the recorder ({signal.Signals(signum).name})"
    if signum == signal.SIGKILL:
        assert recorder.returncode == -signal.SIGKILL
        # what a SIGKILL leaves goes with the next use: the store's recording folder with any read, list or
        # save of the store; a partial run in --output with the next recording into that folder
        if mode == "store":
            assert [p.name[:8] for p in store.iterdir() if p.is_dir()] == [".record-"]
            assert main(["baseline", "list", "--store", str(store)]) == 0
        else:
            assert [p.name for p in output.iterdir()] == [".run-01.json.partial"]
            (tmp_path / "test_skips.py").write_text("import pytest\n\ndef test_x(benchmark):\n    pytest.skip('-')\n")
            with pytest.raises(InputError, match="without writing"):  # after the stale file was deleted
                record_runs(1, output, [str(tmp_path / "test_skips.py"), "-q", "-p", "no:cacheprovider"])
    else:
        assert recorder.returncode == 128 + signum
        assert f"stopped by {signal.Signals(signum).name} during run 1" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.partial"))
    if mode == "store":
        assert not [p for p in store.iterdir() if p.is_dir()] and list_baselines(store) == []
    else:
        assert not list(output.iterdir())


@pytest.mark.slow  # a recorder and its pytest child: 8-25 s
def test_a_second_recorder_into_the_same_folder_is_refused_and_deletes_nothing(tmp_path):
    """Deleting stale partial files is for a recorder that holds the folder: a second recorder used to
    delete the live one's partial run (and then record over its run-NN.json)."""
    output = tmp_path / "runs"
    recorder, _ = start_recorder(tmp_path, "--output", str(output))
    try:
        refused = f"{re.escape(str(output))}: another perfsuite baseline record is recording into"
        with pytest.raises(InputError, match=refused):
            record_runs(1, output, [str(tmp_path / "test_sleepy.py"), "-q", "-p", "no:cacheprovider"])
        assert [p.name for p in output.iterdir()] == [".run-01.json.partial"]  # the live recorder's, kept
    finally:
        os.kill(recorder.pid, signal.SIGTERM)
        _, err = recorder.communicate(timeout=60)
    assert recorder.returncode == 128 + signal.SIGTERM, err
    assert not list(output.iterdir())
