"""Run directories and output files: refuse to clobber them, and lock a run dir while a process uses it.

Every command that writes a run dir or an output file goes through these checks, so that earlier
work is never overwritten without ``--resume`` or ``--overwrite``, and two processes can never write
one run dir at the same time.

The lock is an OS advisory lock (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows) on
``RUN_DIR/.amc.lock``. The OS drops it when the process ends in any way, ``kill -9`` included, so a
stale lock can never block a resume. (The ``filelock`` package was not used: on file systems without
``flock`` it falls back to a lock file that a killed process leaves behind.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from amc.errors import AmcError

__all__ = ["LOCK_NAME", "RunDirLock", "locked_run_dir", "refuse_existing_files"]

#: the lock file inside a run dir (kept after the run; only the OS lock on it matters)
LOCK_NAME = ".amc.lock"


class RunDirLock:
    """An exclusive, non-blocking lock on a run dir (created if missing); see the module docstring.

    :param run_dir: the directory to lock.
    :param command: what holds it (written into the lock file, shown to a second process).
    """

    def __init__(self, run_dir: str | os.PathLike, *, command: str = "amc") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunDirLock:
        """Take the lock; ``AmcError`` naming the holder when another process has it."""
        if self._fd is not None:
            return self
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise AmcError(f"run dir {str(self.run_dir)!r} exists and is not a directory; choose another --run-dir")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _lock_fd(fd)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise AmcError(f"run dir {str(self.run_dir)!r} is in use by another amc process{holder}; wait for it to "
                           "finish (or stop it), or choose another --run-dir") from None
        with contextlib.suppress(OSError):  # the lock holds without the note (e.g. a full disk)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {self.command}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock_fd(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode(errors="replace").strip()
    except OSError:
        return ""
    pid, _, command = text.partition(" ")
    return f" (pid {pid}, {command})" if pid.isdigit() else ""


@contextmanager
def locked_run_dir(run_dir: str | os.PathLike, *, command: str = "amc") -> Iterator[RunDirLock]:
    """``with locked_run_dir(d):`` hold the run dir's lock for the block (see :class:`RunDirLock`).

    When the block fails and the dir did not exist before, the dir is removed again if it holds
    nothing but the lock file, so that a refused run leaves nothing behind.
    """
    run_dir = Path(run_dir)
    existed = run_dir.exists()
    with RunDirLock(run_dir, command=command) as lock:
        try:
            yield lock
        except BaseException:
            if not existed:  # still holding the lock: no other process can start in the dir while it goes
                with contextlib.suppress(OSError):
                    if {p.name for p in run_dir.iterdir()} <= {LOCK_NAME}:  # nothing but the lock file
                        (run_dir / LOCK_NAME).unlink(missing_ok=True)
                        run_dir.rmdir()
            raise


def refuse_existing_files(paths: Iterable[str | os.PathLike | None], *, overwrite: bool, what: str,
                          hint: str = "pass --overwrite to replace it, or choose another output") -> None:
    """``AmcError`` when one of ``paths`` exists and ``overwrite`` is false (checked before any work).

    :param what: the command's output in words, e.g. ``"amc export --out"``.
    """
    if overwrite:
        return
    existing = [str(p) for p in paths if p is not None and Path(p).exists()]
    if existing:
        listed = ", ".join(repr(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise AmcError(f"{what}: {listed} already exist{'s' if len(existing) == 1 else ''}; {hint}")
