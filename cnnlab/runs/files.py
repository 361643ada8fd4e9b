"""Writing a run's files so that a kill never leaves half of one, and the lock that keeps a run
to one writer."""

from __future__ import annotations

import errno
import fcntl
import os
import re
from pathlib import Path

from cnnlab.errors import RunBusy

TEMPORARY = re.compile(r"\..+\.\d+\.tmp")  # what atomic_write_bytes leaves behind when killed
LOCK_FILE = ".lock"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


class RunLock:
    """An exclusive flock on ``<run>/.lock`` holding the writer's process id. The kernel drops
    the lock of a process that dies, so a killed writer's lock is simply taken over."""

    def __init__(self, run_path: Path):
        self.path = Path(run_path) / LOCK_FILE
        self.file = None

    def acquire(self) -> "RunLock":
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise RunBusy(f"{self.path} is not a lock file (a {'link' if self.path.is_symlink() else 'directory'}); "
                          f"remove it if no cnnlab process is writing the run")
        file = open(self.path, "a+", encoding="utf-8", errors="replace")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                file.close()
                raise
            file.seek(0)
            holder = file.read(200).strip() or "another process"
            file.close()
            raise RunBusy(f"run {str(self.path.parent)!r} is being written by {holder}; wait for it to "
                          f"finish or stop it (a run has one writer at a time)") from None
        file.seek(0)
        file.truncate()
        file.write(f"process {os.getpid()}")
        file.flush()
        self.file = file
        return self

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing drops the flock
            self.file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
