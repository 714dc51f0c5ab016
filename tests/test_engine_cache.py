"""The engine cache, with real TensorRT-RTX engines (a tiny ONNX network, ~0.2 s and 134 kB a build).

Hit; a miss for every key part; corrupt, truncated, unreadable, incompatible and badly typed
entries rebuilt with a warning naming the file and the field; ``cache list`` verifying each entry
and showing orphaned temporary files; a hit from another process; and two ``pytest -n 2`` workers
asking for the same engine at the same moment: one builds, the other waits on the lock and loads it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from perfsuite.backends.tensorrt import TENSORRT_RTX, TensorRTConfig, build_engine
from perfsuite.engine_cache import ArtifactKey, Built, EngineCache, EngineCacheWarning

pytest.importorskip(TENSORRT_RTX.module_name, reason="TensorRT-RTX not installed (pip install 'perfsuite[rtx]')")

REPO = Path(__file__).resolve().parent.parent

BASE_KEY = ArtifactKey(
    backend="tensorrt-rtx", flavor="tensorrt-rtx", library_version="1.7.1.116", model="probe",
    model_fingerprint="0" * 64, target={"compute_capabilities": "library default"}, precision="fp32",
    shapes={"x": [1, 64]}, options={"tf32": False},
)
# One changed value per key part: each must be a different entry (a miss, a build).
KEY_CHANGES = {
    "backend": "tensorrt",
    "flavor": "tensorrt",
    "library_version": "1.8.0",
    "model": "probe2",
    "model_fingerprint": "1" * 64,
    "target": {"compute_capabilities": ["8.6"]},
    "precision": "fp16",
    "shapes": {"x": [8, 64]},
    "options": {"tf32": True},
    "kind": "onnx",
}


def tiny_onnx(scale: float = 0.5) -> bytes:
    """images (1, 8) -> images * scale: the smallest ONNX model the suite's build path takes."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((1,), scale, np.float32), "scale")
    graph = helper.make_graph([helper.make_node("Mul", ["images", "scale"], ["logits"])], "tiny",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def build_tiny() -> Built:
    return build_engine(TENSORRT_RTX, tiny_onnx(), "fp32", TensorRTConfig())


@pytest.fixture
def cache(tmp_path) -> EngineCache:
    return EngineCache(tmp_path / "engines")


def test_every_key_part_is_covered_by_the_miss_test():
    assert set(KEY_CHANGES) == {f.name for f in dataclasses.fields(ArtifactKey)}


def test_second_lookup_is_a_hit_with_the_same_bytes(cache):
    first = cache.get_or_build(BASE_KEY, lambda: Built(build_tiny().data, {"engine_build_s": 0.1}))
    assert not first.hit and first.size > 100_000  # a real engine, not a stub
    second = cache.get_or_build(BASE_KEY, lambda: pytest.fail("a hit must not build"))
    assert second.hit
    assert second.data == first.data and second.sha256 == first.sha256
    assert second.notes == {"engine_build_s": 0.1}  # the build's facts come back with the entry
    assert len(cache.build_log()) == 1
    metadata = json.loads(cache.metadata_path(BASE_KEY).read_text())
    assert metadata["key"] == BASE_KEY.as_dict() and metadata["size"] == first.size


@pytest.mark.parametrize("part", sorted(KEY_CHANGES))
def test_each_key_part_makes_a_different_entry(cache, part):
    cache.get_or_build(BASE_KEY, build_tiny)
    changed = dataclasses.replace(BASE_KEY, **{part: KEY_CHANGES[part]})
    assert changed.digest != BASE_KEY.digest
    result = cache.get_or_build(changed, build_tiny)
    assert not result.hit
    assert [r["entry"] for r in cache.build_log()] == [BASE_KEY.entry_name, changed.entry_name]
    assert cache.get_or_build(BASE_KEY, build_tiny).hit  # the first entry is untouched


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _garble_metadata(path: Path) -> None:
    path.with_suffix(".json").write_text('{"format": 1, "key": ')


def _other_version_in_metadata(path: Path) -> None:
    metadata_path = path.with_suffix(".json")
    metadata = json.loads(metadata_path.read_text())
    metadata["key"]["library_version"] = "0.9"
    metadata_path.write_text(json.dumps(metadata))


@pytest.mark.parametrize("damage,message", [
    (_flip_a_byte, "corrupt: sha256"),
    (_truncate, "truncated"),
    (_garble_metadata, "unreadable"),
    (_other_version_in_metadata, "incompatible entry .*library_version"),
])
def test_damaged_entry_is_rebuilt_with_a_warning(cache, damage, message):
    first = cache.get_or_build(BASE_KEY, build_tiny)
    damage(cache.artifact_path(BASE_KEY))
    with pytest.warns(EngineCacheWarning, match=message):
        rebuilt = cache.get_or_build(BASE_KEY, build_tiny)
    assert not rebuilt.hit and rebuilt.size == first.size
    assert len(cache.build_log()) == 2
    assert cache.get_or_build(BASE_KEY, build_tiny).hit  # the rebuilt entry is valid again


def test_missing_engine_file_is_rebuilt_with_a_warning(cache):
    cache.get_or_build(BASE_KEY, build_tiny)
    cache.artifact_path(BASE_KEY).unlink()
    with pytest.warns(EngineCacheWarning, match="artifact file unreadable"):
        assert not cache.get_or_build(BASE_KEY, build_tiny).hit


def test_list_and_clear(cache):
    cache.get_or_build(BASE_KEY, build_tiny)
    cache.get_or_build(dataclasses.replace(BASE_KEY, precision="fp16"), build_tiny)
    entries = list(cache.entries())
    assert sorted(e.metadata["key"]["precision"] for e in entries) == ["fp16", "fp32"]
    assert all(e.problem is None and e.size > 100_000 and e.kind == "engine" for e in entries)
    removed, freed = cache.clear()
    assert removed == 2 and freed >= sum(e.size for e in entries)
    assert list(cache.entries()) == [] and cache.build_log() == []


# Issue 9 #4 and #9: badly typed metadata must be rebuilt with a warning naming the file and the
# field (it gave a traceback on every run: "build_s": "slow"), and a size stored as a string must
# not read "244699596 bytes where 244699596 were stored".
@pytest.mark.parametrize("field,value,message", [
    ("build_s", "slow", r"field build_s: 'slow' is not of type 'number'"),
    ("size", "STORED", r"field size: '\d+' is not of type 'integer'"),
    ("sha256", 12, r"field sha256: 12 is not of type 'string'"),
    ("format", 1, r"field format: 2 was expected"),
    ("notes", [], r"field notes: \[\] is not of type 'object'"),
])
def test_badly_typed_metadata_is_rebuilt_naming_the_file_and_field(cache, field, value, message):
    cache.get_or_build(BASE_KEY, build_tiny)
    path = cache.metadata_path(BASE_KEY)
    metadata = json.loads(path.read_text())
    metadata[field] = str(metadata["size"]) if value == "STORED" else value
    path.write_text(json.dumps(metadata))
    with pytest.warns(EngineCacheWarning, match=rf"metadata {re.escape(str(path))}: {message}; rebuilding") as caught:
        assert not cache.get_or_build(BASE_KEY, build_tiny).hit
    assert "bytes where" not in str(caught[0].message)
    assert cache.get_or_build(BASE_KEY, build_tiny).hit


# Issue 9 #5: cache list showed a truncated engine as healthy and did not see an orphaned .tmp.
def test_list_verifies_each_artifact_and_shows_orphaned_temporary_files(cache, capsys):
    from perfsuite.cli import main

    good = cache.get_or_build(BASE_KEY, build_tiny)
    damaged = cache.get_or_build(dataclasses.replace(BASE_KEY, precision="fp16"), build_tiny)
    damaged.path.write_bytes(damaged.path.read_bytes()[:1000])  # a kill or a full disk mid-copy
    orphan = cache.root / f".{good.path.name}.k3j2h1.tmp"  # what write_bytes_atomic leaves when killed
    orphan.write_bytes(b"\0" * 49_000)
    entries = {e.path.name: e for e in cache.entries()}
    assert entries[good.path.name].problem is None
    truncated = f"truncated or overwritten: 1000 bytes where {damaged.size} were stored"
    assert entries[damaged.path.name].problem == truncated
    assert entries[orphan.name].kind == "temporary" and entries[orphan.name].size == 49_000
    assert entries[orphan.name].problem.startswith("orphaned temporary file")

    assert main(["cache", "list", "--cache-dir", str(cache.root)]) == 1  # something does not verify
    lines = capsys.readouterr().out.splitlines()
    assert "2 engine(s)" in lines[0] and "2 unusable or orphaned file(s)" in lines[0]
    shown = {line.split()[4].rstrip(":"): line.split()[:4] for line in lines[1:]}
    assert shown == {good.path.name: ["ok", "engine", "0.1", "MB"], damaged.path.name: ["BAD", "engine", "0.0", "MB"],
                     orphan.name: ["BAD", "temporary", "0.0", "MB"]}
    assert main(["cache", "list", "--cache-dir", str(cache.root), "--json"]) == 1
    listed = {Path(e["path"]).name: e for e in json.loads(capsys.readouterr().out)["entries"]}
    assert listed[good.path.name]["verified"] and not listed[damaged.path.name]["verified"]
    assert listed[orphan.name] == {"path": str(orphan), "kind": "temporary", "size": 49_000, "verified": False,
                                   "problem": entries[orphan.name].problem, "metadata": None}
    removed, _ = cache.clear()
    assert removed == 2 and not orphan.exists()
    assert main(["cache", "list", "--cache-dir", str(cache.root)]) == 0


def test_a_temporary_file_of_a_running_build_is_not_called_orphaned(cache):
    from filelock import FileLock

    temporary = cache.root / f".{BASE_KEY.entry_name}.engine.a1b2c3.tmp"
    cache.root.mkdir(parents=True)
    temporary.write_bytes(b"half")
    with FileLock(str(cache.root / f"{BASE_KEY.entry_name}.lock")):  # what get_or_build holds while it builds
        (entry,) = cache.entries()
        assert entry.problem == "being written now (its build holds the lock)"
    (entry,) = cache.entries()
    assert entry.problem.startswith("orphaned")


def test_cache_commands(cache, capsys):
    from perfsuite.cli import main

    cache.get_or_build(BASE_KEY, build_tiny)
    assert main(["cache", "list", "--cache-dir", str(cache.root), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["metadata"]["key"] for e in listed["entries"]] == [BASE_KEY.as_dict()]
    assert main(["cache", "list", "--cache-dir", str(cache.root)]) == 0
    assert "tensorrt-rtx" in capsys.readouterr().out
    assert main(["cache", "clear", "--cache-dir", str(cache.root)]) == 0
    assert "removed 1 artifact" in capsys.readouterr().out
    assert list(cache.entries()) == []


def test_a_hit_works_across_processes(cache):
    built = cache.get_or_build(BASE_KEY, build_tiny)
    script = textwrap.dedent(f"""
        import json, sys
        from perfsuite.engine_cache import ArtifactKey, EngineCache
        key = ArtifactKey(**json.loads(sys.argv[1]))
        def must_not_build():
            raise SystemExit("the other process rebuilt instead of hitting")
        found = EngineCache({str(cache.root)!r}).get_or_build(key, must_not_build)
        print(json.dumps({{"hit": found.hit, "sha256": found.sha256, "size": found.size}}))
    """)
    result = subprocess.run([sys.executable, "-c", script, json.dumps(BASE_KEY.as_dict())],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"hit": True, "sha256": built.sha256, "size": built.size}


WORKER_TEST = '''
import json, os, time
from pathlib import Path

import pytest

from perfsuite.backends.tensorrt import TENSORRT_RTX, TensorRTConfig, build_engine
from perfsuite.engine_cache import ArtifactKey, EngineCache

ROOT = Path(os.environ["ENGINE_CACHE_TEST_ROOT"])


def slow_build():
    built = build_engine(TENSORRT_RTX, (ROOT / "tiny.onnx").read_bytes(), "fp32", TensorRTConfig())
    time.sleep(1.0)  # hold the lock long enough that the other worker surely asks meanwhile
    return built


@pytest.mark.parametrize("worker", ["a", "b"])  # xdist sends one to each of two workers
def test_get_engine(worker):
    key = ArtifactKey(**json.loads(os.environ["ENGINE_CACHE_TEST_KEY"]))
    (ROOT / f"ready-{worker}").touch()
    deadline = time.monotonic() + 120
    while len(list(ROOT.glob("ready-*"))) < 2:  # start both lookups together
        assert time.monotonic() < deadline, "the other worker never started"
        time.sleep(0.005)
    started = time.perf_counter()
    found = EngineCache(ROOT / "engines").get_or_build(key, slow_build)
    (ROOT / f"result-{worker}.json").write_text(json.dumps(
        {"hit": found.hit, "sha256": found.sha256, "pid": os.getpid(), "seconds": time.perf_counter() - started}))
'''


def test_parallel_workers_build_once(tmp_path):
    (tmp_path / "test_worker.py").write_text(WORKER_TEST)
    (tmp_path / "tiny.onnx").write_bytes(tiny_onnx())
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "ENGINE_CACHE_TEST_ROOT": str(tmp_path),
           "ENGINE_CACHE_TEST_KEY": json.dumps(BASE_KEY.as_dict())}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"),
         "--rootdir", str(tmp_path), str(tmp_path / "test_worker.py")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = [json.loads((tmp_path / f"result-{w}.json").read_text()) for w in "ab"]
    assert results[0]["pid"] != results[1]["pid"], "both cases ran in one worker"
    assert sorted(r["hit"] for r in results) == [False, True]
    assert results[0]["sha256"] == results[1]["sha256"]
    assert len(EngineCache(tmp_path / "engines").build_log()) == 1
    # The hit waited on the lock for the build (it asked while the build held it), not after it.
    hit = next(r for r in results if r["hit"])
    assert hit["seconds"] > 0.5, hit
