"""The engine cache, with real TensorRT-RTX engines (a tiny network, ~0.1 s and ~0.6 MB a build).

Hit; a miss for every key part; corrupt, truncated, unreadable and incompatible entries rebuilt
with a warning; a hit from another process; and two ``pytest -n 2`` workers asking for the same
engine at the same moment: one builds, the other waits on the lock and loads it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from perfsuite.backends.tensorrt import TENSORRT_RTX, build_probe_engine
from perfsuite.engine_cache import Built, EngineCache, EngineCacheWarning, EngineKey

pytest.importorskip(TENSORRT_RTX.module_name, reason="TensorRT-RTX not installed (pip install 'perfsuite[rtx]')")

REPO = Path(__file__).resolve().parent.parent

BASE_KEY = EngineKey(
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
}


def build_tiny() -> bytes:
    return build_probe_engine(TENSORRT_RTX).data


@pytest.fixture
def cache(tmp_path) -> EngineCache:
    return EngineCache(tmp_path / "engines")


def test_every_key_part_is_covered_by_the_miss_test():
    assert set(KEY_CHANGES) == {f.name for f in dataclasses.fields(EngineKey)}


def test_second_lookup_is_a_hit_with_the_same_bytes(cache):
    first = cache.get_or_build(BASE_KEY, lambda: Built(build_tiny(), {"engine_build_s": 0.1}))
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
    damage(cache.engine_path(BASE_KEY))
    with pytest.warns(EngineCacheWarning, match=message):
        rebuilt = cache.get_or_build(BASE_KEY, build_tiny)
    assert not rebuilt.hit and rebuilt.size == first.size
    assert len(cache.build_log()) == 2
    assert cache.get_or_build(BASE_KEY, build_tiny).hit  # the rebuilt entry is valid again


def test_missing_engine_file_is_rebuilt_with_a_warning(cache):
    cache.get_or_build(BASE_KEY, build_tiny)
    cache.engine_path(BASE_KEY).unlink()
    with pytest.warns(EngineCacheWarning, match="engine file unreadable"):
        assert not cache.get_or_build(BASE_KEY, build_tiny).hit


def test_list_and_clear(cache):
    cache.get_or_build(BASE_KEY, build_tiny)
    cache.get_or_build(dataclasses.replace(BASE_KEY, precision="fp16"), build_tiny)
    entries = list(cache.entries())
    assert sorted(e.metadata["key"]["precision"] for e in entries) == ["fp16", "fp32"]
    assert all(e.problem is None and e.size > 100_000 for e in entries)
    removed, freed = cache.clear()
    assert removed == 2 and freed >= sum(e.size for e in entries)
    assert list(cache.entries()) == [] and cache.build_log() == []


def test_cache_commands(cache, capsys):
    from perfsuite.cli import main

    cache.get_or_build(BASE_KEY, build_tiny)
    assert main(["cache", "list", "--cache-dir", str(cache.root), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["metadata"]["key"] for e in listed["entries"]] == [BASE_KEY.as_dict()]
    assert main(["cache", "list", "--cache-dir", str(cache.root)]) == 0
    assert "tensorrt-rtx" in capsys.readouterr().out
    assert main(["cache", "clear", "--cache-dir", str(cache.root)]) == 0
    assert "removed 1 entry" in capsys.readouterr().out
    assert list(cache.entries()) == []


def test_a_hit_works_across_processes(cache):
    built = cache.get_or_build(BASE_KEY, build_tiny)
    script = textwrap.dedent(f"""
        import json, sys
        from perfsuite.engine_cache import EngineCache, EngineKey
        key = EngineKey(**json.loads(sys.argv[1]))
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

from perfsuite.backends.tensorrt import TENSORRT_RTX, build_probe_engine
from perfsuite.engine_cache import EngineCache, EngineKey

ROOT = Path(os.environ["ENGINE_CACHE_TEST_ROOT"])


def slow_build():
    data = build_probe_engine(TENSORRT_RTX).data
    time.sleep(1.0)  # hold the lock long enough that the other worker surely asks meanwhile
    return data


@pytest.mark.parametrize("worker", ["a", "b"])  # xdist sends one to each of two workers
def test_get_engine(worker):
    key = EngineKey(**json.loads(os.environ["ENGINE_CACHE_TEST_KEY"]))
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
