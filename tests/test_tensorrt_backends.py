"""The TensorRT runners' settings, skip reasons and metrics helpers (no GPU needed).

Every TensorRT backend runs, or says why not and what to install: full TensorRT (not installable
here), TensorRT-RTX (installed; no inference without a supported GPU), torch2trt (source only,
TensorRT 8/10) and Torch-TensorRT.
"""

from __future__ import annotations

import re

import pytest
import torch

from perfsuite.backends import backend_names, get_runner_class
from perfsuite.backends.base import RunSpec, missing_modules
from perfsuite.backends.tensorrt import TENSORRT, TENSORRT_RTX, TensorRTConfig, engine_facts
from perfsuite.errors import InputError

TENSORRT_BACKENDS = ("tensorrt", "tensorrt-rtx", "torch2trt", "torch_tensorrt")


def test_tensorrt_backends_are_registered():
    assert set(TENSORRT_BACKENDS) <= set(backend_names())
    for name in TENSORRT_BACKENDS:
        assert get_runner_class(name).name == name


@pytest.mark.parametrize("name,needs", [
    ("tensorrt", [TENSORRT.module_name]),
    ("tensorrt-rtx", [TENSORRT_RTX.module_name]),
    ("torch2trt", ["tensorrt", "torch2trt"]),
    ("torch_tensorrt", ["torch_tensorrt", "tensorrt"]),
])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_each_backend_runs_or_says_what_to_install(name, needs, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU: the cuda case runs on the GPU machine")
    reason = get_runner_class(name).unavailable_reason(RunSpec("fp16", 1, device))
    missing = missing_modules(*needs)
    if missing:
        install = {"tensorrt": "pip install 'perfsuite[tensorrt]'", "tensorrt-rtx": "pip install 'perfsuite[rtx]'",
                   "torch2trt": "pip install git+https://github.com/NVIDIA-AI-IOT/torch2trt",
                   "torch_tensorrt": "pip install 'perfsuite[torch-tensorrt]'"}[name]
        assert reason is not None and install in reason and missing[0] in reason, reason
    elif device == "cpu":
        assert reason is not None and "CUDA GPU" in reason and "cpu" in reason, reason
    else:  # installed, on a GPU: runs, or a reason from a real attempt (see test_tensorrt_gpu.py)
        assert reason is None or name in reason


def test_torch2trt_refuses_bf16_with_a_reason():
    if missing_modules("tensorrt", "torch2trt") or not torch.cuda.is_available():
        pytest.skip("needs torch2trt, full TensorRT and a GPU to get past the install checks")
    assert "bf16" in get_runner_class("torch2trt").unavailable_reason(RunSpec("bf16", 1, "cuda"))


def test_config_from_pyproject_section():
    config = TensorRTConfig.from_mapping({"dynamic_batch": True, "opt_batch": 16,
                                          "compute_capabilities": ["8.6", "8.9"]})
    assert config.dynamic_batch and config.opt_batch == 16
    assert config.compute_capabilities == ("8.6", "8.9")
    assert config.profile() == {"min": (1, 3, 224, 224), "opt": (16, 3, 224, 224), "max": (256, 3, 224, 224)}


def test_config_is_read_from_the_projects_pyproject(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.perfsuite.tensorrt]\ndynamic_batch = true\nmax_batch = 64\n")
    monkeypatch.chdir(tmp_path)
    config = TensorRTConfig.from_mapping()
    assert config.dynamic_batch and config.max_batch == 64


@pytest.mark.parametrize("values,message", [  # the schema's words, with the table and the field named
    ({"dynamic_batchs": True}, r"unknown field dynamic_batchs; known: .*dynamic_batch"),
    ({"min_batch": 8, "opt_batch": 4}, "need min_batch <= opt_batch <= max_batch"),
    ({"max_batch": 1024}, "field max_batch: 1024 is greater than the maximum of 256"),
    ({"opt_batch": 0}, "field opt_batch: 0 is less than the minimum of 1"),
    ({"optimization_level": 7}, "field optimization_level: 7 is greater than the maximum of 5"),
    ({"dynamic_batch": "yes"}, "field dynamic_batch: 'yes' is not of type 'boolean'"),
    ({"compute_capabilities": ["ampere"]}, r"field compute_capabilities\[0\]: 'ampere' does not match"),
    ({"compute_capabilities": "8.6"}, "field compute_capabilities: '8.6' is not of type 'array'"),
])
def test_bad_config_is_refused_with_the_setting_named(values, message):
    with pytest.raises(InputError, match=r"^\[tool\.perfsuite\.tensorrt\]") as caught:
        TensorRTConfig.from_mapping(values)
    assert re.search(message, str(caught.value)), caught.value


class FakeEngine:
    """Only what ``engine_facts`` reads: TensorRT 10.0 had no ``device_memory_size_v2``."""

    num_layers = 21


def test_engine_facts_report_the_engines_own_device_memory_where_tensorrt_gives_it():
    engine = FakeEngine()
    assert engine_facts(engine) == {"engine_device_memory_bytes": None, "engine_layers": 21}
    engine.device_memory_size_v2 = 12_845_056
    assert engine_facts(engine)["engine_device_memory_bytes"] == 12_845_056


def test_tensorrt_logs_reach_python_logging_at_warning(caplog):
    """TensorRT's own warnings and errors are visible by default: the ``perfsuite.tensorrt`` logger
    has no NullHandler, so Python's last-resort handler prints WARNING and above."""
    import logging

    pytest.importorskip(TENSORRT_RTX.module_name, reason="TensorRT-RTX not installed (pip install 'perfsuite[rtx]')")
    from perfsuite.backends.tensorrt import flavor_logger

    logger = flavor_logger(TENSORRT_RTX)
    trt = TENSORRT_RTX.module()
    runtime = trt.Runtime(logger)
    logger.errors.clear()
    with caplog.at_level(logging.WARNING, logger="perfsuite.tensorrt"):
        assert runtime.deserialize_cuda_engine(b"not an engine") is None  # a real call that fails and says why
    assert logging.getLogger("perfsuite.tensorrt").handlers == []
    records = [r for r in caplog.records if r.name == "perfsuite.tensorrt" and r.levelno == logging.ERROR]
    assert records and all(r.getMessage().startswith("TensorRT-RTX: ") for r in records)
    assert logger.errors and logger.errors[0] in records[0].getMessage()
