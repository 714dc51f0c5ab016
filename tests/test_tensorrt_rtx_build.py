"""Real TensorRT-RTX engines of the suite's model (AlexNet by default), built on this machine's CPU.

The same code the ``tensorrt`` and ``tensorrt-rtx`` runners use: the shared ONNX export, TensorRT's
ONNX parser into a strongly typed network, the build with progress monitoring, the engine cache.
fp32 and fp16, static and dynamic batch (one optimization profile). Each build prints its engine
size on the terminal so CI's log shows them.
"""

from __future__ import annotations

import io
import shutil

import pytest

from perfsuite.backends.tensorrt import (
    TENSORRT_RTX,
    BuildSettings,
    EngineBuildError,
    OnnxParseError,
    TensorRTConfig,
    build_probe_engine,
    build_serialized_engine,
    get_engine,
    parse_onnx,
    supported_compute_capabilities,
)
from perfsuite.engine_cache import EngineCache
from perfsuite.errors import InputError
from perfsuite.onnx_export import export_onnx

pytest.importorskip(TENSORRT_RTX.module_name, reason="TensorRT-RTX not installed (pip install 'perfsuite[rtx]')")

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "bf16": 2}


class TerminalBuffer(io.StringIO):
    """Stands in for a terminal (CI has none) to see what the progress display draws."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rtx_engines")
    yield EngineCache(folder)
    shutil.rmtree(folder, ignore_errors=True)  # ~0.7 GB of engines


@pytest.mark.parametrize("precision,dynamic", [("fp32", False), ("fp16", False), ("fp32", True), ("fp16", True)],
                         ids=["fp32-static", "fp16-static", "fp32-dynamic", "fp16-dynamic"])
def test_builds_a_real_engine_on_the_cpu(cache, loaded_model, precision, dynamic, capsys, record_property):
    terminal = precision == "fp32"  # fp32 builds draw progress on a "terminal", fp16 builds on a pipe
    stream = TerminalBuffer() if terminal else io.StringIO()
    config = TensorRTConfig(dynamic_batch=dynamic)
    engine = get_engine(TENSORRT_RTX, loaded_model, precision, 1, config, "cpu", cache=cache, progress_stream=stream)

    assert not engine.hit
    # Every weight is in the engine at the precision's width (precision comes from the ONNX dtypes),
    # plus kernels and metadata: measured +0.3 MB for AlexNet (+0.1 %), +3.9 MB for
    # mobilenet_v3_small. An AlexNet fp16 engine holding fp32 weights (244 MB) would break the upper bound (144 MB).
    weights = sum(t.numel() for t in loaded_model.module.state_dict().values()) * BYTES_PER_ELEMENT[precision]
    assert 0.95 * weights < engine.size < 1.05 * weights + 16e6, (engine.size, weights)
    notes = engine.notes
    assert notes["export"]["dynamic_batch"] is dynamic
    progress = notes["progress"]
    assert progress["steps"] > 0 and progress["phases_started"] == progress["phases_finished"] > 0
    assert ("done in" in stream.getvalue()) is terminal  # drawn on a terminal, silent otherwise
    shapes = engine.key.as_dict()["shapes"]["images"]
    assert shapes == ({"min": [1, 3, 224, 224], "opt": [8, 3, 224, 224], "max": [256, 3, 224, 224]} if dynamic
                      else [1, 3, 224, 224])

    kind = "dynamic batch 1..256" if dynamic else "static batch 1"
    line = (f"TensorRT-RTX {engine.key.library_version} engine: {loaded_model.name} {precision} {kind}: "
            f"{engine.size:,} bytes, built on the CPU in {notes['engine_build_s']:.2f} s "
            f"({progress['events']} progress events)")
    record_property("engine_bytes", engine.size)
    record_property("perfsuite_summary", line)  # travels to the controller under xdist, for a summary hook
    with capsys.disabled():
        print("\n" + line)

    again = get_engine(TENSORRT_RTX, loaded_model, precision, 1, config, "cpu", cache=cache)
    assert again.hit and again.sha256 == engine.sha256
    if dynamic:  # one engine serves every batch size in its profile
        assert get_engine(TENSORRT_RTX, loaded_model, precision, 8, config, "cpu", cache=cache).hit


def test_dynamic_batch_outside_the_profile_is_refused(cache, loaded_model):
    with pytest.raises(InputError, match="batch size 512 is outside the dynamic profile"):
        get_engine(TENSORRT_RTX, loaded_model, "fp16", 512, TensorRTConfig(dynamic_batch=True), "cpu", cache=cache)


@pytest.mark.parametrize("data,message", [
    (b"\xff\xfe garbage \x00",
     r"not-onnx \(12 bytes\): TensorRT-RTX's ONNX parser rejected it: MODEL_DESERIALIZE_FAILED"),
    (b"this is not an ONNX", r"not-onnx \(19 bytes\): parsed to a network with 0 input\(s\) and 0 output\(s\)"),
    (b"", r"not-onnx \(0 bytes\): parsed to a network with 0 input"),
])
def test_parser_error_names_the_model_and_the_problem(data, message):
    with pytest.raises(OnnxParseError, match=message):
        parse_onnx(TENSORRT_RTX, data, source="not-onnx")


def test_build_failure_carries_tensorrts_log(loaded_model):
    # A dynamic-batch network built without an optimization profile: TensorRT refuses and says why.
    parsed = parse_onnx(TENSORRT_RTX, export_onnx(loaded_model, "fp16", None).model_bytes)
    settings = BuildSettings(profile_shapes=None, compute_capabilities=(), optimization_level=None, tf32=None)
    with pytest.raises(EngineBuildError, match=r"build_serialized_network failed: .*optimization profile"):
        build_serialized_engine(parsed, settings)


def test_targets_chosen_compute_capabilities():
    supported = supported_compute_capabilities(TENSORRT_RTX)
    assert {"8.6", "8.9"} <= set(supported) and "9.0" not in supported
    assert len(build_probe_engine(TENSORRT_RTX, compute_capabilities=("8.6", "12.0")).data) > 100_000
    with pytest.raises(InputError, match=r"compute capability 9.0: .* choose from 7.5, 8.0"):
        build_probe_engine(TENSORRT_RTX, compute_capabilities=("9.0",))
