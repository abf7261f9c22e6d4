"""Files: atomic result writes (temporary file + rename, honouring the umask), advisory locks, writability checks."""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import secrets
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

#: errors of the environment rather than of the program (read-only folder, full disk, quota, permissions, I/O, a
#: symbolic link planted where a file is written, a name longer than the file system allows)
ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ELOOP,
                      errno.ENAMETOOLONG)


def _new_temp(path: Path) -> Path:
    """A new empty file beside ``path``; created with mode 0666 so the umask decides its permissions (mkstemp would
    make it 0600 whatever the umask, and the rename would carry that onto the result)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


@contextmanager
def atomic_replace(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path`` (readers see the
    old file or the whole new one), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old file or the whole new one."""
    with atomic_replace(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 1) == 0:
        return _jsonable(v.item())
    return v


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as JSON (non-finite floats become null / "inf")."""
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Atomically write rows (union of keys, in first-seen order) as CSV."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    atomic_write_text(path, buf.getvalue())


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_trajectory(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The columns of a ``trajectory.csv`` as float arrays (blank cells and unparsable entries become NaN).

    The one trajectory reader of the project: the check and the reports use it.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None) or []
        rows = list(reader)
    cols: dict[str, np.ndarray] = {}
    for j, key in enumerate(header):
        vals = np.full(len(rows), np.nan)
        for i, r in enumerate(rows):
            try:
                vals[i] = float(r[j]) if j < len(r) and r[j] != "" else np.nan
            except ValueError:
                pass
        cols[key] = vals
    return cols

# ---------------------------------------------------------------------------------------------- links
class PlantedLink(OSError):
    """A file the tool would create or truncate is a symbolic link: refused, never followed."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(errno.ELOOP, "a symbolic link where ptforget writes a file (refused, never followed; "
                         "remove it)", str(path))


def open_no_follow(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (PlantedLink) instead of writing through it: a link
    planted where the tool creates or truncates a file (a lock, a cache file) must not reach its target."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise PlantedLink(path) from None
        raise


#: folders whose links a tool the project uses makes itself (W&B's ``latest-run``)
OWN_LINKS = ("wandb",)


def planted_link(folder: str | os.PathLike, depth: int = 2) -> Path | None:
    """The first symbolic link in ``folder`` or its subfolders (``depth`` levels), or None: the tool writes only
    plain files into its folders (run, sweep, check), so a link there was planted, and writing through it would
    reach a file outside."""
    folder = Path(folder)
    if depth < 0 or folder.is_symlink() or not folder.is_dir():
        return None
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return None
    entries = [e for e in entries if e.name not in OWN_LINKS]
    for e in entries:
        if e.is_symlink():
            return Path(e.path)
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            found = planted_link(e.path, depth - 1)
            if found is not None:
                return found
    return None


# ---------------------------------------------------------------------------------------------- locks
class LockBusy(RuntimeError):
    """Another process holds the lock; ``holder`` is what it wrote into the lock file (pid@host)."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path, self.holder = path, holder
        super().__init__(f"{path} is held by {holder or 'another process'}")


#: locks this process holds: real path -> [fd, depth] (flock conflicts between two descriptors of one process, so
#: a nested acquisition of a lock already held here is counted instead of taken again)
_HELD: dict[str, list[int]] = {}


@contextmanager
def file_lock(path: str | os.PathLike, blocking: bool = True) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on ``path`` (created, never removed) for the block.

    Blocking waits for the holder to finish; non-blocking raises LockBusy at once. Re-entrant within a process.
    The lock is released by the kernel when its process dies, so a killed run never leaves a stale lock.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(path)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    fd = open_no_follow(path, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockBusy(path, _read_holder(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        _HELD[key] = [fd, 1]
        try:
            yield
        finally:
            del _HELD[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def lock_holder(path: str | os.PathLike) -> str | None:
    """Who holds the lock at ``path`` (pid@host, or '' when unknown), or None when nobody does (not even us)."""
    import fcntl

    path = Path(path)
    if os.path.realpath(path) in _HELD or not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        return holder
    except OSError:
        os.close(fd)
        return None
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return None


# ---------------------------------------------------------------------------------------------- writability
def dir_problem(path: str | os.PathLike) -> str | None:
    """Why a file could not be written into directory ``path`` (created if needed), or None when one can.

    Tried without leaving anything behind: a one-byte temporary file in the nearest existing ancestor (so a
    read-only folder, a file in the way, a full disk or a missing permission all show up here).
    """
    if str(path) == "":
        return "an empty path"
    p = Path(path).expanduser()
    p = p if p.is_absolute() else Path.cwd() / p
    too_long = name_problem(p)
    if too_long is not None:
        return too_long
    anc = p
    try:
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            return f"{anc} is not a directory"
        tmp = _new_temp(anc / ".ptforget-write-test")
        try:
            with open(tmp, "wb") as fh:
                fh.write(b"x")
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as err:
        return f"cannot create a file in {anc}: {err.strerror or err}"
    return None


#: room left in a folder's path for the names written inside it (run/seed3/lightning/.metrics.csv.1a2b3c4d.tmp)
PATH_ROOM = 80


def name_problem(path: str | os.PathLike) -> str | None:
    """Why the file system would refuse ``path`` or a file the tool writes inside it (ENAMETOOLONG), or None: a
    component longer than NAME_MAX bytes, or a path with no room for the tool's names under PATH_MAX."""
    p = Path(path)
    try:
        name_max = os.pathconf("/", "PC_NAME_MAX")
        path_max = os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    for part in p.parts:
        if len(os.fsencode(part)) > name_max - 20:  # the tool's temporary files add up to 20 bytes to a name
            return (f"a folder name of {len(os.fsencode(part))} bytes ({part[:24]}...); the file system allows "
                    f"{name_max}, the tool needs {name_max - 20} at most")
    if len(os.fsencode(str(p))) > path_max - PATH_ROOM:
        return (f"a path of {len(os.fsencode(str(p)))} bytes; the file system allows {path_max}, and the files "
                f"written inside need {PATH_ROOM} more")
    return None


#: what torch.save raises (a RuntimeError from its C++ writer) when the disk is full or the file cannot be written
_TORCH_WRITE = re.compile(r"basic_ios::clear|PytorchStreamWriter failed|file write failed|unexpected pos")


def environment_error(err: BaseException | None) -> OSError | None:
    """``err`` (or what caused it) as an OSError when it is a fault of the environment (full disk, read-only
    folder, quota, permissions), or None."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS:
            return err
        if isinstance(err, RuntimeError) and _TORCH_WRITE.search(str(err)):
            first = str(err).strip().splitlines()[0] if str(err).strip() else "write failed"
            return OSError(errno.EIO, f"torch could not write a checkpoint ({first}): is the disk full or read-only?")
        err = err.__cause__ or err.__context__
        seen += 1
    return None
