"""The pytest plugin's own refusals (issue 16): a weights file checked once at configure time, a stored
run --benchmark-compare-fail cannot judge, a regression as one line and exit 1 rather than a traceback.
Real pytest processes on a one-line benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from child_process import child_env

ROOT = Path(__file__).resolve().parent.parent
TINY = "def test_tiny(benchmark):\n    benchmark(lambda: sum(range(100)))\n"


def _pytest(folder: Path, *arguments: str) -> subprocess.CompletedProcess:
    (folder / "test_tiny.py").write_text(TINY)
    env = child_env(PERFSUITE_CACHE_DIR=None, PERFSUITE_WEIGHTS="random")  # no xdist variables (see child_process)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "perfsuite.plugin",
                           "test_tiny.py", "--device", "cpu", "--benchmark-max-time", "0.01", *arguments],
                          cwd=folder, capture_output=True, text=True, env=env, timeout=300, check=False)


def _weights(folder: Path, kind: str) -> tuple[Path, str]:
    path = folder / f"{kind}.pt"
    if kind == "missing":
        return path, "does not exist"
    if kind == "garbage":
        path.write_bytes(b"not a pickle at all\n" * 10)
        return path, "not a PyTorch state_dict"
    if kind == "resnet18":
        torch.save(torchvision.models.resnet18().state_dict(), path)
        return path, "do not fit model AlexNet: missing features.0.weight"
    state = torchvision.models.alexnet().state_dict()
    state["features.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, path)
    return path, "tensor features.0.weight holds 1 NaN or Inf value(s)"


@pytest.mark.parametrize("kind", ["missing", "garbage", "resnet18", "nan"])
def test_a_bad_weights_file_is_refused_naming_it(tmp_path, kind):
    """What the configure-time check (below) raises: one line naming the file and what is wrong; NaN
    weights were loaded silently (predict printed ``nan%``)."""
    from perfsuite.errors import WeightsError
    from perfsuite.models import load_model

    path, message = _weights(tmp_path, kind)
    with pytest.raises(WeightsError) as caught:
        load_model("alexnet", str(path))
    assert str(path) in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_weights_file_is_one_usage_error_at_configure(tmp_path):
    """issue 16: --weights /nonexistent.pt (a garbage file, resnet18's state_dict) gave an ERROR at setup,
    with frames, for every test that loads the model."""
    (tmp_path / "test_model.py").write_text("def test_model(loaded_model):\n    assert loaded_model\n"
                                            "def test_again(loaded_model):\n    assert loaded_model\n")
    path, message = _weights(tmp_path, "resnet18")
    result = _pytest(tmp_path, "test_model.py", "--weights", str(path))
    assert result.returncode == 4, result.stdout + result.stderr
    assert str(path) in result.stderr and message in result.stderr
    assert "Traceback" not in result.stdout + result.stderr and "ERROR at setup" not in result.stdout


def _saved_run(folder: Path, median: float) -> None:
    result = _pytest(folder, "--benchmark-save=base")
    assert result.returncode == 0, result.stdout + result.stderr
    (saved,) = folder.glob(".benchmarks/*/*.json")
    data = json.loads(saved.read_text())
    for row in data["benchmarks"]:
        row["stats"].update(min=median, max=median, mean=median, median=median)
    saved.write_text(json.dumps(data))


def test_compare_fail_against_a_zero_median_is_a_usage_error(tmp_path):
    """issue 16: pytest-benchmark's PerformanceRegression traceback (any time is an infinite % of zero)."""
    _saved_run(tmp_path, 0.0)
    result = _pytest(tmp_path, "--benchmark-compare", "--benchmark-compare-fail=median:5%")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "0001_base.json: benchmark test_tiny.py::test_tiny: stats.median is 0.0" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_compare_fail_regression_is_one_line_and_exit_1(tmp_path):
    _saved_run(tmp_path, 1e-12)  # any real run is slower than a picosecond
    result = _pytest(tmp_path, "--benchmark-compare", "--benchmark-compare-fail=median:5%")
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    assert "Performance has regressed" in text and "perfsuite: --benchmark-compare-fail: performance regressed" in text
    assert "Traceback" not in text and "PerformanceRegression" not in text


def test_a_file_in_the_cache_folders_place_is_a_usage_error(tmp_path):
    """issue 16: a .perfsuite-cache that is a regular file ended every converted backend's row in
    NotADirectoryError."""
    (tmp_path / "pyproject.toml").write_text("[tool.perfsuite]\n")
    (tmp_path / ".perfsuite-cache").write_text("a file")
    result = _pytest(tmp_path, "--collect-only")
    assert result.returncode == 4, result.stdout + result.stderr
    assert ".perfsuite-cache is a file, not a folder" in result.stderr and "Traceback" not in result.stderr
