"""Every file the suite writes (perfsuite.output): atomic onto a regular file, through to a device or FIFO,
a symlink followed, a full disk or read-only mount leaving the old file as it was (issue 16)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from child_process import child_env

from perfsuite.cli import main
from perfsuite.output import OutputError, check_output_path, is_write_through, write_bytes, write_text

ROOT = Path(__file__).resolve().parent.parent
DRILL = ROOT / "docs" / "gate-drill" / "session-1" / "runs"
SIDES = (f"{DRILL}/base-01.json,{DRILL}/base-02.json", f"{DRILL}/base-03.json,{DRILL}/base-04.json")


def _mount_tmpfs(folder: Path, size: str = "64k") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 KiB file system, unmounted afterwards."""
    folder = tmp_path / "small"
    _mount_tmpfs(folder)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill ``folder``'s file system up to about ``leave`` free bytes."""
    status = os.statvfs(folder)
    free = status.f_bavail * status.f_frsize
    (folder / "filler").write_bytes(b"\0" * max(0, free - leave))


def test_a_full_disk_leaves_the_old_file_byte_identical(small_disk):
    target = small_disk / "results.json"
    old = json.dumps({"old": "run"}).encode()
    target.write_bytes(old)
    _fill(small_disk, leave=8192)
    with pytest.raises(OutputError, match=r"--json .*disk full \(no space left on device\).*left unchanged"):
        write_bytes(target, b"x" * 200_000, f"--json {target}")
    assert target.read_bytes() == old
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "results.json"]  # no temporary left


def test_a_full_or_read_only_file_system_is_refused_before_the_work(small_disk):
    _fill(small_disk, leave=0)
    with pytest.raises(OutputError, match="is full"):
        check_output_path(small_disk / "new.json", "--json new.json")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(OutputError, match="read-only file system"):
        check_output_path(small_disk / "new.json", "--json new.json")


def test_a_character_device_is_written_through_never_replaced():
    """issue 16: --json /dev/full became a regular file (as root)."""
    with pytest.raises(OutputError, match=r"/dev/full: cannot write .*disk full"):
        write_bytes(Path("/dev/full"), b"data", "--json /dev/full")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    write_text(Path("/dev/null"), "through")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert is_write_through(Path("/dev/stdout"))  # even where stdout is redirected to a regular file


def test_a_fifo_is_written_through_to_its_reader(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    check_output_path(fifo, "--json pipe")
    write_text(fifo, '{"gate": "pass"}')
    reader.join(timeout=10)
    assert received == [b'{"gate": "pass"}']
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_symlink_is_followed_and_kept(tmp_path):
    target = tmp_path / "real" / "gate.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "gate.json"
    link.symlink_to(target)
    write_text(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "real" / "made.json")
    write_text(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "real" / "made.json").read_text() == "made"


def test_a_socket_or_folder_is_refused(tmp_path):
    path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        with pytest.raises(OutputError, match="not a regular file, a character device or a FIFO"):
            check_output_path(path, "--json sock")
        with pytest.raises(OutputError, match="refusing to replace it"):
            write_text(path, "x")
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        server.close()
    with pytest.raises(OutputError, match="is a folder"):
        check_output_path(tmp_path, "--json tmp")


def test_compare_outputs_never_replace_a_device_fifo_or_symlink(tmp_path, capsys):
    """issue 16: compare --json/--summary replaced /dev/full, a FIFO and a symlink with regular files."""
    assert main(["compare", *SIDES, "--json", "/dev/full"]) == 2
    assert "--json /dev/full: cannot write (disk full" in capsys.readouterr().err
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)

    target = tmp_path / "kept" / "gate.json"
    target.parent.mkdir()
    target.write_text("{}")
    link = tmp_path / "gate.json"
    link.symlink_to(target)
    summary_target = tmp_path / "kept" / "summary.md"
    summary_target.write_text("# before\n")
    summary_link = tmp_path / "summary.md"
    summary_link.symlink_to(summary_target)
    assert main(["compare", *SIDES, "--json", str(link), "--summary", str(summary_link),
                 "--inconclusive", "pass"]) == 0  # two runs a side of a shared CPU: undecided, passed here
    assert link.is_symlink() and summary_link.is_symlink()
    assert json.loads(target.read_text())["exit_code"] == 0
    assert summary_target.read_text().startswith("# before\n#")


def test_golden_check_and_report_outputs_never_replace_a_device(tmp_path, capsys):
    assert main(["report", SIDES[0], "--output", str(tmp_path / "report"), "--no-charts",
                 "--summary", "/dev/full"]) == 2
    assert "--summary /dev/full: cannot write (disk full" in capsys.readouterr().err
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


# -- --benchmark-json (pytest-benchmark writes it; perfsuite.plugin makes it atomic) -----------------

TINY = "def test_tiny(benchmark):\n    benchmark(lambda: sum(range(100)))\n"


def _pytest_benchmark_version() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(part) for part in version("pytest-benchmark").split(".")[:2])


def _pytest_tiny(folder: Path, *arguments: str) -> subprocess.CompletedProcess:
    (folder / "test_tiny.py").write_text(TINY)
    env = child_env(PERFSUITE_WEIGHTS="random")  # no xdist variables: pytest-benchmark would turn itself off
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "perfsuite.plugin",
                           "test_tiny.py", "--device", "cpu", "--benchmark-max-time", "0.02", *arguments],
                          cwd=folder, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_benchmark_json_on_a_full_disk_keeps_the_old_file(tmp_path, small_disk):
    """issue 16 (data lost): pytest-benchmark's own open(..., "wb") truncated a valid results.json when the
    disk filled; now it writes a temporary file beside it, renamed only once complete."""
    if _pytest_benchmark_version() < (5, 3):  # the GPU image has 5.2.3
        pytest.skip(f"pytest-benchmark {_pytest_benchmark_version()} opens --benchmark-json (truncating it) while "
                    "parsing the command line, before any plugin runs; perfsuite needs pytest-benchmark >= 5.3 "
                    "(its dependency) to keep the old file")
    target = small_disk / "results.json"
    old = json.dumps({"benchmarks": [], "note": "the valid old run"}, indent=2).encode()
    target.write_bytes(old)
    _fill(small_disk, leave=4096)  # room for the check, not for the run's JSON
    work = tmp_path / "work"
    work.mkdir()
    result = _pytest_tiny(work, "--benchmark-json", str(target))
    text = result.stdout + result.stderr
    assert result.returncode == 4, text
    assert f"--benchmark-json {target}: not written (disk full" in text and "left unchanged" in text
    assert "Traceback" not in text and "INTERNALERROR" not in text
    assert target.read_bytes() == old
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "results.json"]

    (small_disk / "filler").unlink()  # with room, the same run replaces it
    result = _pytest_tiny(work, "--benchmark-json", str(target), "--benchmark-min-rounds", "1",
                          "--benchmark-max-time", "0.000001")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(target.read_text())["benchmarks"][0]["name"] == "test_tiny"


def test_benchmark_json_paths_are_checked_before_the_run(tmp_path):
    """issue 16: a read-only folder, a folder and a socket failed after the whole run (or were replaced)."""
    folder = tmp_path / "ro"
    _mount_tmpfs(folder)
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        result = _pytest_tiny(tmp_path, "--benchmark-json", str(folder / "r.json"))
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
    # perfsuite's check, or (pytest-benchmark < 5.3, which opens the file while parsing) argparse's, both exit 4
    assert result.returncode == 4 and "read-only file system" in result.stderr.lower(), result.stderr
    assert "passed" not in result.stdout  # refused before any benchmark ran
    result = _pytest_tiny(tmp_path, "--benchmark-json", str(tmp_path))
    assert result.returncode == 4 and (f"--benchmark-json {tmp_path}: is a folder" in result.stderr
                                       or (_pytest_benchmark_version() < (5, 3) and "Is a directory" in result.stderr))


def test_a_finished_file_moved_into_place_follows_the_same_rules(tmp_path):
    """gate.record moves each finished run into place: onto a regular file atomically, through to a FIFO's
    reader, never over a socket."""
    from perfsuite.output import replace_with_file

    target = tmp_path / "run-01.json"
    target.write_text("old")
    partial = tmp_path / ".run-01.json.partial"
    partial.write_text("new")
    replace_with_file(partial, target, "run 1")
    assert target.read_text() == "new" and not partial.exists()

    fifo = tmp_path / "run-02.json"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    partial.write_text("through")
    replace_with_file(partial, fifo, "run 2")
    reader.join(timeout=10)
    assert received == [b"through"] and stat.S_ISFIFO(os.lstat(fifo).st_mode) and not partial.exists()

    sock_path = tmp_path / "run-03.json"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        partial.write_text("refused")
        with pytest.raises(OutputError, match="refusing to replace it"):
            replace_with_file(partial, sock_path, "run 3")
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode) and not partial.exists()
    finally:
        server.close()
