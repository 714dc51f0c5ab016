"""The TensorRT runners' settings, skip reasons and metrics helpers (no GPU needed).

Every TensorRT backend runs, or says why not and what to install: full TensorRT (not installable
here), TensorRT-RTX (installed; no inference without a supported GPU), torch2trt (source only,
TensorRT 8/10) and Torch-TensorRT.
"""

from __future__ import annotations

import json

import pytest
import torch

from perfsuite.backends import backend_names, get_runner_class
from perfsuite.backends.base import RunSpec, missing_modules
from perfsuite.backends.tensorrt import (
    TENSORRT,
    TENSORRT_RTX,
    BuildProgress,
    TensorRTConfig,
    summarize_engine_information,
)
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
                                          "compute_capabilities": ["86", "sm89"]})
    assert config.dynamic_batch and config.opt_batch == 16
    assert config.compute_capabilities == ("8.6", "8.9")


@pytest.mark.parametrize("values,message", [
    ({"dynamic_batchs": True}, "unknown setting.*dynamic_batchs"),
    ({"min_batch": 8, "opt_batch": 4}, "min_batch <= opt_batch <= max_batch"),
    ({"max_batch": 1024}, "max_batch = 1024: the dynamic ONNX export allows at most 256"),
    ({"opt_batch": 0}, "opt_batch = 0: must be a positive integer"),
    ({"optimization_level": 7}, "optimization_level = 7: choose 0 to 5"),
    ({"compute_capabilities": ["ampere"]}, "compute capability 'ampere'"),
])
def test_bad_config_is_refused_with_the_setting_named(values, message):
    with pytest.raises(InputError, match=message):
        TensorRTConfig.from_mapping(values)


def test_progress_counts_events_and_is_silent_off_a_terminal(capsys):
    progress = BuildProgress("build")  # stderr is captured by pytest: not a terminal
    progress.phase_start("Building engine", None, 2)
    assert progress.step_complete("Building engine", 0) is True  # True: go on building
    progress.phase_finish("Building engine")
    assert progress.as_dict() == {"events": 3, "phases_started": 1, "phases_finished": 1, "steps": 1}
    assert capsys.readouterr().err == ""


# Engine inspector output in the shapes NVIDIA documents (DETAILED verbosity): TensorRT 10 puts
# the type in "Format/Datatype", TensorRT 11 in "DataType".
TRT10_INFO = {"Layers": [
    {"Name": "conv1", "LayerType": "CaskConvolution",
     "Outputs": [{"Name": "a", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
    {"Name": "fc", "LayerType": "CaskGemmMatrixMultiply",
     "Outputs": [{"Name": "b", "Format/Datatype": "Row major linear FP32 format"}]},
    {"Name": "fc2", "LayerType": "CaskGemmMatrixMultiply",
     "Outputs": [{"Name": "c", "Format/Datatype": "Row major linear FP16 format"}]},
], "Bindings": ["images", "logits"]}
TRT11_INFO = {"Layers": [
    {"Name": "conv1", "LayerType": "CaskConvolution", "Outputs": [{"Name": "a", "DataType": "Half",
                                                                  "Format": "Channel major FP16 format"}]},
    {"Name": "cast", "LayerType": "Reformat", "Outputs": [{"Name": "b", "DataType": "Float"}]},
]}


def test_inspector_summary_reads_both_json_layouts():
    ten = summarize_engine_information(json.dumps(TRT10_INFO))
    assert ten == {"inspector_layers": 3, "layer_precisions": {"FP16": 2, "FP32": 1},
                   "layer_types": {"CaskConvolution": 1, "CaskGemmMatrixMultiply": 2}}
    eleven = summarize_engine_information(json.dumps(TRT11_INFO))
    assert eleven["layer_precisions"] == {"FP16": 1, "FP32": 1}
    names_only = summarize_engine_information(json.dumps({"Layers": ["conv1", "fc"]}))
    assert names_only == {"inspector_layers": 2, "layer_precisions": None, "layer_types": None}
