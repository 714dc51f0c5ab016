"""The backend registry, run specs, skip reasons and suite configuration."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from perfsuite.backends import backend_names, get_runner_class, unavailable_reason
from perfsuite.backends.base import Runner, RunSpec
from perfsuite.config import load_suite_config, parse_batch_sizes
from perfsuite.errors import BackendUnavailable, InputError


def test_foundation_backends_are_registered():
    assert {"eager", "onnxruntime"} <= set(backend_names())
    for name in backend_names():
        assert get_runner_class(name).name == name


def test_unknown_backend_is_refused():
    with pytest.raises(InputError, match="tensorflow"):
        get_runner_class("tensorflow")


@pytest.mark.parametrize("kwargs,message", [
    ({"precision": "fp8", "batch_size": 1}, "fp8"),
    ({"precision": "fp32", "batch_size": 0}, "batch size"),
])
def test_bad_run_specs_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        RunSpec(device="cpu", **kwargs)


class NeedsMissingPackage(Runner):
    name = "needs-missing"
    requires = ("perfsuite_no_such_module",)
    extra = "imaginary"

    def _build(self): ...
    def _load(self): ...
    def infer(self, prepared): ...


def test_missing_package_reason_names_the_extra():
    reason = NeedsMissingPackage.unavailable_reason(RunSpec("fp32", 1, "cpu"))
    assert "perfsuite_no_such_module" in reason and "pip install 'perfsuite[imaginary]'" in reason


def test_build_refuses_an_unavailable_backend():
    from perfsuite.models import load_model

    runner = NeedsMissingPackage(load_model("mobilenet_v3_small", "random"), RunSpec("fp32", 1, "cpu"))
    with pytest.raises(BackendUnavailable, match="imaginary"):
        runner.build()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the reason given on a machine without a GPU")
def test_gpu_spec_without_gpu_gives_a_reason():
    assert "no CUDA GPU" in unavailable_reason("eager", RunSpec("fp16", 1, "cuda"))


def test_batch_sizes_are_validated():
    assert parse_batch_sizes("1, 8,64") == (1, 8, 64)
    for bad in ("0", "1,x", "-2", ""):
        with pytest.raises(InputError, match="--batch-sizes"):
            parse_batch_sizes(bad)


def test_suite_config_reads_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [tool.perfsuite]
        model = "resnet18"
        batch_sizes_cpu = [2, 4]
        [tool.perfsuite.tolerances]
        fp16 = {rel = 0.02}
    """))
    config = load_suite_config(tmp_path / "pyproject.toml")
    assert config.model == "resnet18" and config.batch_sizes("cpu") == (2, 4)
    assert config.extra["tolerances"]["fp16"]["rel"] == 0.02


def test_broken_pyproject_is_named(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.perfsuite\n")
    with pytest.raises(InputError, match=r"pyproject\.toml"):
        load_suite_config(tmp_path / "pyproject.toml")


@pytest.mark.parametrize("args,message", [
    (["--batch-sizes", "0"], "batch size '0'"),
    (["--backends", "tensorflow"], "tensorflow"),
    (["--precisions", "fp64"], "fp64"),
    (["--device", "tpu"], "--device"),
])
def test_bad_pytest_options_are_usage_errors(args, message):
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/test_registry.py", "--collect-only", "-q", *args],
                            capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 4  # pytest's usage-error exit code
    assert message in result.stderr
