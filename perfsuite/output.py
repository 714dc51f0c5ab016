"""Every file the suite writes goes through here: checked before the work, written so nothing is lost.

The rules, in one place:

- **Checked first** (:func:`check_output_path`): not empty, not a folder, its folder exists or can be
  made and may be written (not a read-only file system), the file system is not already full, and what
  is there now is a regular file, a new path, a character device or a FIFO. A socket or block device
  is refused.
- **A regular file or a new path is written atomically**: a temporary file in the same folder, fsync,
  ``os.replace``. A reader never sees half a file; a full disk or a read-only file system leaves the old
  file as it was, and the error (:class:`OutputError`) says so.
- **A character device, a FIFO or ``/dev/stdout``** (anything under ``/dev`` or ``/proc``) **is written
  through**: opened and written, never replaced by a regular file.
- **A symlink is followed**: the file it points to is written atomically and the link is kept (a
  dangling link makes its target). ``os.replace`` onto the link itself would replace the link.

Code that stores entries of its own (the engine cache) may refuse everything but regular files with
:func:`require_regular_or_missing`, where writing through would make no sense.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from perfsuite.errors import InputError


class OutputError(InputError, OSError):
    """A file the suite was asked to write cannot be written; what was there is left unchanged.

    An :class:`InputError` (exit 2 in the CLI, a usage error in pytest) and an ``OSError`` (so code that
    cleans up after a failed write still does)."""


_REASONS = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "is a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def describe_os_error(exc: OSError) -> str:
    """The plain words for an ``OSError`` (``disk full (no space left on device)``), with its errno name."""
    name = errno.errorcode.get(exc.errno or 0, "")
    reason = _REASONS.get(exc.errno or 0, exc.strerror or str(exc))
    return f"{reason} [{name}]" if name else reason


def is_write_through(path: Path) -> bool:
    """A path written in place, never replaced: a character device, a FIFO, or anything under /dev or /proc
    (``/dev/stdout`` resolves to a terminal, a pipe or the very file the shell redirected to)."""
    text = str(Path(path).absolute())
    if text.startswith(("/dev/", "/proc/")):
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def resolve_target(path: str | Path) -> Path:
    """Where the bytes land: ``path``, or the file a symlink at ``path`` points to (followed, the link kept)."""
    path = Path(path)
    if not path.is_symlink():
        return path
    try:
        return path.resolve(strict=False)
    except (RuntimeError, OSError) as exc:  # a symlink loop
        raise OutputError(f"{path}: a symlink that cannot be followed ({exc})") from exc


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_folder_writable(folder: Path, what: str) -> None:
    """``folder`` (or the nearest part of it that exists) is a folder this process may write, with room."""
    existing = _nearest_existing(Path(folder).absolute())
    if not existing.is_dir():
        raise OutputError(f"{what}: {existing} is a file, not a folder")
    try:
        status = os.statvfs(existing)
    except OSError:
        status = None
    if status is not None and status.f_flag & os.ST_RDONLY:
        raise OutputError(f"{what}: {existing} is on a read-only file system")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what}: {existing} is not writable (permission denied)")
    if status is not None and status.f_bavail == 0 and status.f_blocks > 0:
        raise OutputError(f"{what}: the file system of {existing} is full (no space left on device)")


def check_output_path(value: str | Path, what: str) -> Path:
    """The path of a file to be written, checked before the work starts (see the module docstring);
    ``what`` names it in errors (``--json results.json``). Returns ``Path(value)``."""
    if not str(value):
        raise OutputError(f"{what}: the path is empty (an unset variable?)")
    path = Path(value)
    target = resolve_target(path)
    if is_write_through(path):
        target = path
    if target.is_dir():
        raise OutputError(f"{what}: {'points to' if target != path else 'is'} a folder; give a file name")
    if is_write_through(target):
        if not target.exists() and str(target.absolute()).startswith("/dev/"):
            raise OutputError(f"{what}: no such device")
        return path
    if target.exists() or target.is_symlink():
        mode = os.lstat(target).st_mode
        if not stat.S_ISREG(mode):
            raise OutputError(f"{what}: is not a regular file, a character device or a FIFO; refusing to replace it")
    check_output_folder_writable(target.parent, what)
    return path


def require_regular_or_missing(path: Path, what: str) -> None:
    """For stores of their own (the engine cache): anything at ``path`` but a regular file is refused
    (a FIFO would hang a reader, a folder cannot be replaced by a file)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"{what}: {path}: cannot be inspected ({describe_os_error(exc)})") from exc
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                "a symlink" if stat.S_ISLNK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "not a regular file")
        raise OutputError(f"{what}: {path} is {kind}, not a regular file; remove it")


def write_bytes(path: str | Path, data: bytes | bytearray | memoryview, what: str | None = None,
                append: bool = False) -> None:
    """Write ``data`` to ``path`` by the module's rules; :class:`OutputError` (naming ``what``, else the path,
    and what happened) on failure, with whatever was at ``path`` before left unchanged.

    ``append``: add to the end of the file (a regular file is rewritten atomically, old content + ``data``)."""
    path = Path(path)
    what = what or str(path)
    if is_write_through(path) or is_write_through(resolve_target(path)):
        try:
            with open(path, "ab" if append else "wb") as stream:
                stream.write(data)
        except OSError as exc:
            raise OutputError(f"{what}: cannot write ({describe_os_error(exc)})") from exc
        return
    target = resolve_target(path)
    if target.is_dir():
        raise OutputError(f"{what}: is a folder; give a file name")
    if target.exists() and not stat.S_ISREG(os.lstat(target).st_mode):
        raise OutputError(f"{what}: is not a regular file, a character device or a FIFO; refusing to replace it")
    try:
        if append and target.exists():
            data = target.read_bytes() + bytes(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace_atomically(target, data)
    except OSError as exc:
        kept = "left unchanged" if target.exists() else "not written"
        raise OutputError(f"{what}: cannot write ({describe_os_error(exc)}); {target} {kept}") from exc


def _replace_atomically(target: Path, data: bytes | bytearray | memoryview) -> None:
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o644)  # mkstemp's 0600 would make reports and baselines private to their writer
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def replace_with_file(temporary: Path, path: Path, what: str) -> None:
    """Move a finished ``temporary`` (written by someone else, in ``path``'s folder) onto ``path`` by the
    module's rules: fsync, then ``os.replace`` onto a regular file or new path (a symlink followed); copied
    through to a device or FIFO; anything else refused. :class:`OutputError` if it cannot be done (the
    temporary is removed either way)."""
    path = Path(path)
    if is_write_through(path) or is_write_through(resolve_target(path)):
        try:
            write_bytes(path, Path(temporary).read_bytes(), what)
        finally:
            Path(temporary).unlink(missing_ok=True)
        return
    target = resolve_target(path)
    if target.exists() and not stat.S_ISREG(os.lstat(target).st_mode):
        Path(temporary).unlink(missing_ok=True)
        raise OutputError(f"{what}: is not a regular file, a character device or a FIFO; refusing to replace it")
    try:
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise OutputError(f"{what}: cannot write ({describe_os_error(exc)}); {path} left unchanged") from exc


def write_text(path: str | Path, text: str, what: str | None = None, append: bool = False) -> None:
    """UTF-8 text, see :func:`write_bytes`."""
    write_bytes(path, text.encode(), what, append=append)


def write_json(path: str | Path, data: Any, what: str | None = None) -> None:
    """JSON (indented, sorted keys), see :func:`write_bytes`."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True), what)
