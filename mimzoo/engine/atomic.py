"""Atomic writes of files and folders, with the umask's modes and no temporaries left behind for good.

Everything is built under a temporary name and renamed into place only when complete. The temporary is named
``.NAME.mimzoo-tmp-ORIGIN-PID-XXXXXXXX`` (ORIGIN: the host and its process namespace), so a temporary that a killed
mimzoo process left is recognisable: the next write into that folder removes those whose process is gone, and
never touches any other file. Temporaries are created with mode 0666 (files) and 0777 (folders) less the umask, as
any new file is (``mkstemp``/``mkdtemp`` would make them 0600/0700 whatever the umask).

A folder is replaced by swapping the two atomically (Linux ``renameat2(RENAME_EXCHANGE)``). Where the system or
file system cannot, the old folder is first renamed to ``.NAME.mimzoo-old-...``; if the process dies before the new
one is in place, the next write into that folder puts the old one back.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import secrets
import shutil
import socket
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_LEFTOVER = re.compile(r"\.(?P<name>.+)\.mimzoo-(?P<kind>tmp|old)-(?P<origin>.+)-(?P<pid>\d+)-[0-9a-f]{8}")


@functools.cache
def _origin() -> str:
    """Where this process's ids mean something: the host and (on Linux) its pid namespace, as in a container."""
    try:
        namespace = re.sub(r"\D", "", os.readlink("/proc/self/ns/pid"))
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}_{namespace}"


def _leftover_name(name: str, kind: str) -> str:
    return f".{name}.mimzoo-{kind}-{_origin()}-{os.getpid()}-{secrets.token_hex(4)}"


def _is_stale(match: re.Match[str]) -> bool:
    """Whether the process that made a temporary is gone (only decidable for processes of this host)."""
    pid = int(match["pid"])
    if match["origin"] != _origin() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def tidy(folder: Path) -> None:
    """Remove what killed mimzoo processes left in ``folder``; an old folder whose replacement never arrived is
    renamed back. Anything not named as mimzoo names its temporaries is left alone."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        match = _LEFTOVER.fullmatch(entry.name)
        if not match or not _is_stale(match):
            continue
        target = folder / match["name"]
        try:
            if match["kind"] == "old" and not os.path.lexists(target):
                os.rename(entry, target)
            else:
                _remove(entry)
        except OSError:  # another process tidied it first, or it is not ours to remove: leave it
            pass


def _create(work: Path, name: str, folder: bool) -> Path:
    """A new empty temporary file or folder in ``work`` for ``name``; the umask applies to its mode."""
    while True:
        tmp = work / _leftover_name(name, "tmp")
        try:
            if folder:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def _prepare(path: Path, work_dir: Path | None) -> Path:
    """Create the destination's folder and the work folder, and tidy both; returns the work folder."""
    work = Path(work_dir) if work_dir is not None else path.parent
    for folder in {path.parent, work}:
        folder.mkdir(parents=True, exist_ok=True)
        tidy(folder)
    return work


@contextmanager
def atomic_path(path: Path, work_dir: Path | None = None) -> Iterator[Path]:
    """Yield a temporary file path; on success fsync it and rename it over ``path``, else remove it.

    work_dir: where the temporary lives (default: beside ``path``; the same file system).
    """
    path = Path(path)
    tmp = _create(_prepare(path, work_dir), path.name, folder=False)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path, work_dir: Path | None = None) -> Iterator[Path]:
    """Yield a temporary folder; on success replace ``path`` (absent, empty or a folder) with it, else remove it.

    work_dir: where the temporary lives (default: beside ``path``; the same file system).
    """
    path = Path(path)
    tmp = _create(_prepare(path, work_dir), path.name, folder=True)
    try:
        yield tmp
        file_mode = stat.S_IMODE(tmp.stat().st_mode) & 0o666  # what the umask leaves of a new file's 0666
        for file in tmp.iterdir():
            if file.is_file() and not file.is_symlink():  # a link's target is not the folder's to change
                os.chmod(file, file_mode)  # some writers ignore the umask (safetensors makes its files 0600)
                _fsync(file)
        _fsync(tmp)
        _replace_dir(tmp, path)
        _fsync(path.parent)
    finally:
        _remove(tmp)  # after a swap it holds the old folder


def _replace_dir(new: Path, path: Path) -> None:
    if not os.path.lexists(path) or (path.is_dir() and not any(path.iterdir())):
        os.replace(new, path)  # atomic onto nothing or an empty folder
    elif not _exchange(new, path):
        old = path.parent / _leftover_name(path.name, "old")
        os.rename(path, old)
        os.rename(new, path)  # a process killed before this leaves `old`, which the next write restores
        _remove(old)


@functools.cache
def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:  # a C library older than glibc 2.28
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the system or file system cannot."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(b))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
