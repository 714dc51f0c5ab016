"""How the test suite itself runs: ``pytest tests`` on xdist workers, and children's output read with their words."""

from __future__ import annotations

import subprocess
import sys

import pytest
from child_process import ROOT, child_env, read_child_json

pytest.importorskip("xdist", reason="pytest-xdist not installed (pip install 'perfsuite[dev]')")


def _start(*arguments: str) -> subprocess.Popen:
    # -n auto honours PYTEST_XDIST_AUTO_NUM_WORKERS: two workers, not one per core of a 16-core machine
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-k", "no_test_is_named_this",
                             *arguments], cwd=ROOT, env=child_env(PYTEST_XDIST_AUTO_NUM_WORKERS="2"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_pytest_tests_runs_on_workers_and_a_named_file_or_the_slow_tier_in_one_process():
    """The README's ``pytest tests`` spreads over xdist workers (tests/conftest.py); a file named on the command
    line and ``-m slow`` stay in one process."""
    # the folder's test files left out (--ignore-glob): how the run is spread is decided before collection, and
    # collecting every test module three times over cost ~20 s of the suite's time
    no_modules = "--ignore-glob=*/test_*.py"
    children = {name: _start(*arguments) for name, arguments in {
        "folder": ["tests", no_modules], "file": ["tests/test_environment.py"],
        "slow": ["tests", "-m", "slow", no_modules]}.items()}
    outputs = {name: child.communicate(timeout=600)[0] for name, child in children.items()}
    assert all(child.returncode == 5 for child in children.values()), outputs  # 5: no test selected
    assert "created: 2/2 workers" in outputs["folder"], outputs["folder"]
    for name in ("file", "slow"):
        assert "created:" not in outputs[name] and "workers" not in outputs[name], outputs[name]
    # pytest-benchmark's "automatically disabled because xdist plugin is active" is not printed for tests/
    # (perfsuite disables it first; pytest-benchmark before 5.3, which the GPU image has, warns regardless)
    from importlib.metadata import version

    if tuple(int(part) for part in version("pytest-benchmark").split(".")[:2]) >= (5, 3):
        assert "automatically disabled" not in outputs["folder"]


def test_a_childs_missing_or_broken_json_is_reported_with_what_the_child_printed(tmp_path):
    completed = subprocess.run([sys.executable, "-c", "import sys; print('the child said this'); sys.exit(3)"],
                               capture_output=True, text=True, check=False)
    with pytest.raises(AssertionError, match=r"(?s)out\.json was not written.*exited 3.*the child said this"):
        read_child_json(tmp_path / "out.json", completed)
    (tmp_path / "out.json").write_text("")
    with pytest.raises(AssertionError, match=r"(?s)out\.json is not JSON .*: an empty file.*the child said this"):
        read_child_json(tmp_path / "out.json", completed)
    (tmp_path / "out.json").write_text('{"rows": [1]}')
    assert read_child_json(tmp_path / "out.json", completed) == {"rows": [1]}


def test_a_gpu_timing_test_waits_for_running_tests_and_new_ones_wait_for_it(tmp_path):
    """tests/conftest.py's GPU turn: an exclusive holder waits until shared holders are done, and a shared
    request made while it waits is served after it (no starvation by a stream of shared tests)."""
    import threading
    import time

    from conftest import gpu_turn

    order: list[str] = []
    shared_in, exclusive_waiting = threading.Event(), threading.Event()

    def shared_first() -> None:
        with gpu_turn(False, tmp_path):
            order.append("shared 1 in")
            shared_in.set()
            exclusive_waiting.wait(5)
            time.sleep(0.3)  # the exclusive request is now blocked behind this holder
            order.append("shared 1 out")

    def exclusive() -> None:
        shared_in.wait(5)
        exclusive_waiting.set()
        with gpu_turn(True, tmp_path):
            order.append("exclusive in")
            time.sleep(0.2)
            order.append("exclusive out")

    def shared_late() -> None:
        exclusive_waiting.wait(5)
        time.sleep(0.1)  # arrives while the exclusive request waits
        with gpu_turn(False, tmp_path):
            order.append("shared 2 in")

    threads = [threading.Thread(target=f) for f in (shared_first, exclusive, shared_late)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert order == ["shared 1 in", "shared 1 out", "exclusive in", "exclusive out", "shared 2 in"], order
