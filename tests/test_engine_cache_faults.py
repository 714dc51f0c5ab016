"""The engine cache's folder and files when they are not what they should be (issue 16): a regular file in
the folder's place, a read-only or full file system, an entry path that is a folder or a FIFO. Each is a
clear error naming the path before anything hangs or is half written; ``cache list`` flags them.
Builds here return plain bytes: the cache's rules do not depend on what the artifact is."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from perfsuite.cli import main
from perfsuite.engine_cache import ArtifactKey, EngineCache
from perfsuite.output import OutputError

KEY = ArtifactKey(backend="onnxruntime", flavor="onnxruntime", library_version="1.0", model="probe",
                  model_fingerprint="0" * 64, target={}, precision="fp16", shapes={"x": [1, 8]}, options={},
                  kind="onnx")


def _mount_tmpfs(folder: Path, *options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(["size=64k", *options]), "tmpfs", str(folder)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.strip()}")


@pytest.fixture
def mounted(tmp_path):
    folders: list[Path] = []

    def mount(name: str, *options: str) -> Path:
        folder = tmp_path / name
        _mount_tmpfs(folder, *options)
        folders.append(folder)
        return folder

    yield mount
    for folder in folders:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_file_in_the_cache_folders_place_is_named(tmp_path, capsys):
    """issue 16: a .perfsuite-cache that is a regular file ended in NotADirectoryError (predict, pytest);
    cache list said 0 engines."""
    blocker = tmp_path / ".perfsuite-cache"
    blocker.write_text("not a folder")
    cache = EngineCache(blocker / "engines")
    with pytest.raises(OutputError, match=r"\.perfsuite-cache is a file, not a folder"):
        cache.get_or_build(KEY, lambda: b"never built")
    assert main(["cache", "list", "--cache-dir", str(blocker / "engines")]) == 2
    assert ".perfsuite-cache is a file, not a folder" in capsys.readouterr().err
    assert main(["cache", "clear", "--cache-dir", str(blocker)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_a_read_only_cache_is_named_before_a_build(mounted, capsys):
    """issue 16: predict --precision fp16, the fp16 benchmarks and cache clear ended in OSError [Errno 30]."""
    folder = mounted("ro")
    (folder / "old.onnx").write_bytes(b"x")
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    built = []
    with pytest.raises(OutputError, match=r"read-only file system.*PERFSUITE_CACHE_DIR"):
        EngineCache(folder).get_or_build(KEY, lambda: built.append(1) or b"data")
    assert built == []  # refused before the (long) build
    assert main(["cache", "clear", "--cache-dir", str(folder)]) == 2
    assert "read-only file system" in capsys.readouterr().err
    assert (folder / "old.onnx").exists()


def test_a_full_disk_during_a_build_leaves_no_half_entry(mounted):
    """issue 16: a full disk during an engine build ended in OSError [Errno 28]."""
    folder = mounted("full")
    cache = EngineCache(folder)
    with pytest.raises(OutputError, match=r"disk full \(no space left on device\)"):
        cache.get_or_build(KEY, lambda: b"\1" * 200_000)
    assert not cache.artifact_path(KEY).exists() and not cache.metadata_path(KEY).exists()
    assert not list(folder.glob(".*.tmp"))
    assert cache.get_or_build(KEY, lambda: b"\1" * 1000).size == 1000  # the next, smaller build is fine


def test_an_entry_path_that_is_a_folder_or_fifo_is_refused_and_listed(tmp_path, capsys):
    """issue 16: a folder at the engine's path ended in IsADirectoryError; a FIFO made the build hang."""
    cache = EngineCache(tmp_path / "engines")
    cache.root.mkdir()
    cache.artifact_path(KEY).mkdir()
    with pytest.raises(OutputError, match=r"\.onnx is a folder, not a regular file; remove it"):
        cache.get_or_build(KEY, lambda: b"data")
    cache.artifact_path(KEY).rmdir()
    os.mkfifo(cache.metadata_path(KEY))
    outcome: list[BaseException | None] = []

    def build() -> None:
        try:
            cache.get_or_build(KEY, lambda: b"data")
            outcome.append(None)
        except OutputError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=build, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert outcome and "is a FIFO, not a regular file" in str(outcome[0])  # refused, not hung

    (cache.root / "other.engine").mkdir()
    assert main(["cache", "list", "--cache-dir", str(cache.root)]) == 1
    out = capsys.readouterr().out
    assert "2 unusable or orphaned file(s)" in out
    assert "other.engine: a folder" in out and "not a regular file (a FIFO" in out
    assert main(["cache", "clear", "--cache-dir", str(cache.root)]) == 0
    assert list(cache.root.iterdir()) == []
