"""Real TensorRT-RTX engines of the suite's model (AlexNet by default), built on this machine's CPU.

The same code the ``tensorrt`` and ``tensorrt-rtx`` runners use: the cached ONNX export, TensorRT's
ONNX parser into a strongly typed network, the build with tqdm progress, the engine cache. fp32
and fp16, static and dynamic batch (one optimization profile). Each build prints its engine size
on the terminal so CI's log shows them. Broken models fail with TensorRT's own words, also when
the suite's pytest run meets them (a failure, never a skip), and a changed export builds anew.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import put_export
from perfsuite.backends.tensorrt import TENSORRT_RTX, TensorRTConfig, build_engine, get_engine
from perfsuite.engine_cache import EngineCache
from perfsuite.errors import BackendError, BackendUnavailable, InputError
from perfsuite.onnx_export import export_key

trt = pytest.importorskip(TENSORRT_RTX.module_name, reason="TensorRT-RTX not installed (pip install 'perfsuite[rtx]')")

REPO = Path(__file__).resolve().parent.parent
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "bf16": 2}


class TerminalBuffer(io.StringIO):
    """Stands in for a terminal (CI has none) to see what the progress bars draw."""

    def isatty(self) -> bool:
        return True


def small_onnx(op: str = "Relu", shape: tuple = (1, 8), dtype: str = "FLOAT") -> bytes:
    """images -> op -> logits: a one-node model, valid ONNX; ``op`` may be one no runtime knows."""
    from onnx import TensorProto, helper

    element = getattr(TensorProto, dtype)
    graph = helper.make_graph([helper.make_node(op, ["images"], ["logits"])], "small",
                              [helper.make_tensor_value_info("images", element, list(shape))],
                              [helper.make_tensor_value_info("logits", element, list(shape))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rtx_engines")
    yield EngineCache(folder)
    shutil.rmtree(folder, ignore_errors=True)  # ~1.5 GB of exports and engines


@pytest.mark.parametrize("precision,dynamic", [("fp32", False), ("fp16", False), ("fp32", True), ("fp16", True)],
                         ids=["fp32-static", "fp16-static", "fp32-dynamic", "fp16-dynamic"])
def test_builds_a_real_engine_on_the_cpu(cache, loaded_model, precision, dynamic, capsys, record_property,
                                         monkeypatch, shared_exports):
    terminal = precision == "fp32"  # fp32 builds draw progress on a "terminal", fp16 builds on a pipe
    stderr = TerminalBuffer() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    config = TensorRTConfig(dynamic_batch=dynamic)
    put_export(cache, shared_exports, loaded_model, precision, None if dynamic else 1)  # the build is tested here
    export, engine = get_engine(TENSORRT_RTX, loaded_model, precision, 1, config, "cpu", cache=cache)
    monkeypatch.undo()

    assert not engine.hit
    # Every weight is in the engine at the precision's width (precision comes from the ONNX dtypes),
    # plus kernels and metadata: measured +0.3 MB for AlexNet (+0.1 %), +3.9 MB for
    # mobilenet_v3_small. An AlexNet fp16 engine holding fp32 weights (244 MB) would break the upper bound (144 MB).
    weights = sum(t.numel() for t in loaded_model.module.state_dict().values()) * BYTES_PER_ELEMENT[precision]
    assert 0.95 * weights < engine.size < 1.05 * weights + 16e6, (engine.size, weights)
    assert 0.95 * weights < export.size < 1.05 * weights + 1e6, (export.size, weights)
    assert engine.key.options["onnx_sha256"] == export.sha256  # the engine is of exactly this export
    assert export.key.shapes["images"] == ({"min": [1, 3, 224, 224], "max": [256, 3, 224, 224]} if dynamic
                                           else [1, 3, 224, 224])
    drawn = stderr.getvalue()
    assert ("Building" in drawn and "step" in drawn) is terminal, drawn[-500:]  # tqdm bars, on a terminal only
    shapes = engine.key.as_dict()["shapes"]["images"]
    assert shapes == ({"min": [1, 3, 224, 224], "opt": [8, 3, 224, 224], "max": [256, 3, 224, 224]} if dynamic
                      else [1, 3, 224, 224])

    kind = "dynamic batch 1..256" if dynamic else "static batch 1"
    line = (f"TensorRT-RTX {engine.key.library_version} engine: {loaded_model.name} {precision} {kind}: "
            f"{engine.size:,} bytes, built on the CPU in {engine.build_s:.2f} s (export {export.build_s:.2f} s)")
    record_property("engine_bytes", engine.size)
    record_property("perfsuite_summary", line)  # travels to the controller under xdist, for a summary hook
    with capsys.disabled():
        print("\n" + line)

    export_again, again = get_engine(TENSORRT_RTX, loaded_model, precision, 1, config, "cpu", cache=cache)
    assert export_again.hit and again.hit and again.sha256 == engine.sha256
    assert (again.build_s, export_again.build_s) == (engine.build_s, export.build_s)  # as measured when made
    if dynamic:  # one engine serves every batch size in its profile
        assert get_engine(TENSORRT_RTX, loaded_model, precision, 8, config, "cpu", cache=cache)[1].hit


def test_a_changed_onnx_byte_builds_a_new_engine(tmp_path, loaded_model, shared_exports):
    """After a torch or onnxscript upgrade the exporter may write other bytes for the same model: the
    engine built from the old bytes must not be reused (its key holds the export's sha256)."""
    import onnx
    from onnx import numpy_helper

    cache, config = EngineCache(tmp_path), TensorRTConfig()
    put_export(cache, shared_exports, loaded_model, "fp16", 1)
    export, engine = get_engine(TENSORRT_RTX, loaded_model, "fp16", 1, config, "cpu", cache=cache)
    model = onnx.load_from_string(export.data)
    weight = model.graph.initializer[0]
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] = np.float16(float(values.flat[0]) + 0.5)
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    key = export_key(loaded_model, "fp16", 1)
    cache.metadata_path(key).unlink()  # as if another exporter version had written the entry: other bytes
    changed = cache.get_or_build(key, model.SerializeToString)
    assert changed.sha256 != export.sha256 and abs(changed.size - export.size) < 64
    builds = len(cache.build_log())
    _, rebuilt = get_engine(TENSORRT_RTX, loaded_model, "fp16", 1, config, "cpu", cache=cache)
    assert not rebuilt.hit and rebuilt.key.options["onnx_sha256"] == changed.sha256
    assert rebuilt.path != engine.path and engine.path.exists()  # the old engine stays for the old bytes
    assert [r["kind"] for r in cache.build_log()[builds:]] == ["engine"]
    assert changed.path == export.path and changed.path.read_bytes() == changed.data  # one export per key


def test_dynamic_batch_outside_the_profile_is_refused(cache, loaded_model):
    with pytest.raises(InputError, match=r"batch size 512 is outside 1\.\.256, the dynamic profile"):
        get_engine(TENSORRT_RTX, loaded_model, "fp16", 512, TensorRTConfig(dynamic_batch=True), "cpu", cache=cache)


@pytest.mark.parametrize("data,message", [
    (b"\xff\xfe garbage \x00",
     r"not-onnx \(12 bytes\): TensorRT-RTX's ONNX parser rejected it: MODEL_DESERIALIZE_FAILED"),
    (b"this is not an ONNX", r"not-onnx \(19 bytes\): parsed to 0 input\(s\) of type -; fp32 needs one FLOAT input"),
    (b"", r"not-onnx \(0 bytes\): parsed to 0 input"),
    (small_onnx("NoSuchOp"), r"ONNX parser rejected it: INVALID_NODE at node 0 \(NoSuchOp\): .*Plugin not found"),
    (small_onnx(dtype="FLOAT16"), r"parsed to 1 input\(s\) of type HALF; fp32 needs one FLOAT input"),
])
def test_a_broken_model_fails_with_tensorrts_words(data, message):
    with pytest.raises(BackendError, match=message) as caught:
        build_engine(TENSORRT_RTX, data, "fp32", TensorRTConfig(), source="not-onnx")
    assert not isinstance(caught.value, BackendUnavailable)  # a real failure: the test fails, it never skips


def test_a_build_failure_carries_tensorrts_log():
    # A dynamic batch dimension built without an optimization profile: TensorRT refuses and says why.
    with pytest.raises(BackendError, match=r"build_serialized_network failed for .*optimization profile"):
        build_engine(TENSORRT_RTX, small_onnx(shape=("batch", 8)), "fp32", TensorRTConfig())


def test_targets_chosen_compute_capabilities():
    supported = [m for m in trt.ComputeCapability.__members__ if m.startswith("SM")]
    assert {"SM86", "SM89"} <= set(supported) and "SM90" not in supported
    built = build_engine(TENSORRT_RTX, small_onnx(), "fp32", TensorRTConfig(compute_capabilities=("8.6", "12.0")))
    assert len(built.data) > 100_000
    with pytest.raises(InputError, match=r"compute capability 9.0: TensorRT-RTX targets .*SM86"):
        build_engine(TENSORRT_RTX, small_onnx(), "fp32", TensorRTConfig(compute_capabilities=("9.0",)))


PRETEND_A_SUPPORTED_GPU = '''
"""Stands in for what this machine lacks, a GPU that TensorRT-RTX supports: the availability check
passes, so the suite's own tests build for real (TensorRT-RTX builds on the CPU)."""
from perfsuite.backends.tensorrt import TensorRTRtxRunner

TensorRTRtxRunner._device_reason = classmethod(lambda cls, spec: None)
'''


def test_a_broken_model_fails_the_suites_own_test_never_skips_it(tmp_path, alexnet):
    """The suite's parity test on tensorrt-rtx, with exports TensorRT rejects in the cache (an exporter
    that wrote a broken file): the run reports FAILED with TensorRT's message. Before, a failed build
    was a BackendUnavailable, which the plugin turns into a skip, and ``pytest tests`` stayed green."""
    cache = EngineCache(tmp_path / "cache" / "engines")
    broken = {"fp32": small_onnx("NoSuchOp"),  # the parser rejects it
              "fp16": small_onnx(shape=("batch", 8), dtype="FLOAT16")}  # parses; the build refuses it
    for precision, data in broken.items():
        cache.get_or_build(export_key(alexnet, precision, 2), lambda data=data: data)  # batch 2: the fixtures
    (tmp_path / "pretend_supported_gpu.py").write_text(PRETEND_A_SUPPORTED_GPU)
    env = {**os.environ, "PERFSUITE_CACHE_DIR": str(tmp_path / "cache"), "PERFSUITE_WEIGHTS": "random",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_parity.py::test_backend_matches_reference", "-p",
         "pretend_supported_gpu", "-p", "no:cacheprovider", "-q", "-rfs", "--backends", "tensorrt-rtx",
         "--precisions", "fp32,fp16", "--device", "cpu", "--model", "alexnet"],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    out = result.stdout
    assert result.returncode == 1, out[-3000:] + result.stderr[-2000:]
    assert "2 failed" in out and "skipped" not in out, out[-3000:]
    assert "TensorRT-RTX's ONNX parser rejected it: INVALID_NODE at node 0 (NoSuchOp)" in out, out[-3000:]
    assert "build_serialized_network failed for" in out and "optimization profile" in out, out[-3000:]
