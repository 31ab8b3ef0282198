"""A run directory owned by one run at a time, and left either holding a run or as it was found.

`RunDir(path).claim()` creates the directory if needed and takes an exclusive `fcntl.flock` on its lock file
(`.nnkit-lock`, holding the owner's pid, host and start time). The kernel drops the lock when the process dies,
however it dies, so a crashed or killed run never leaves a directory locked; a second run (another `nnkit train`
with the same --out or --resume, a second tuning trial) is refused in one line naming the holder.

`release()` ends the claim. If the run wrote no checkpoint (it failed or was interrupted before its first
epoch ended), it takes away the files it wrote and the directory if it made it, so that `--out` accepts the
same path again; a run that saved last.pt leaves everything for `--resume`.

`check_run_dir` is what a new run's --out may be (new or empty) and `prepare_run_dir` claims it once the data and
the model were checked, checking again under the lock.

Pure Python (no torch): nnkit tune's trials use it too.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from nnkit.errors import RunDirError
from nnkit.train import checkpoint as ckpt
from nnkit.train.config import TrainConfig

LOCK_NAME = ".nnkit-lock"
# Files a run writes before its first checkpoint (and the temp files of atomic writes, .NAME.*.tmp): the only
# ones release() may remove. Anything else in the directory was put there by someone else and stays.
RUN_FILES = ("config.json", "metrics.jsonl", "metrics.csv", "curves.png", "summary.json", "best.pt")


def holder(path: Path) -> str:
    """'pid 123 on host, started 2026-12-01 09:40:02 UTC' from a lock file, as well as it can be read."""
    try:
        info = json.loads((path / LOCK_NAME).read_text())
        return f"pid {int(info['pid'])} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):  # written between our open and its write: no details yet
        return "another process (starting up)"


class RunDir:
    """Exclusive ownership of one run directory for the life of a run (or until the process dies)."""

    def __init__(self, path: Path | str, option: str = "--out", new: bool = True) -> None:
        self.path = Path(path)
        self.option = option  # how the user named the directory, for messages: --out, --resume
        self.new = new  # a new run: without a checkpoint at the end its files go (a resumed run's never do)
        self._fd: int | None = None
        self._created = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def probe(self) -> None:
        """Refuse now, touching nothing, if another live run holds the directory (a fast check before the data
        loads; claim() checks again for real)."""
        if not (self.path / LOCK_NAME).is_file():
            return
        try:
            fd = os.open(self.path / LOCK_NAME, os.O_RDONLY)
        except OSError:
            return
        try:
            if not _try_lock(fd, self):
                raise self._busy()
        finally:
            os.close(fd)  # closing drops a lock taken only to look

    def claim(self) -> RunDir:
        """Create the directory if it is missing and lock it; RunDirError if another run holds it."""
        import fcntl  # POSIX only; imported here so that a platform without it fails only when training

        if self._fd is not None:
            return self
        try:
            if not self.path.is_dir():
                self.path.mkdir(parents=True)
                self._created = True
        except FileExistsError:  # made meanwhile by someone else: fine, the lock decides
            pass
        except OSError as exc:
            raise RunDirError(f"{self.option} {self.path}: not writable ({exc.strerror or exc})") from exc
        lock = self.path / LOCK_NAME
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                self._undo_mkdir()
                raise RunDirError(f"{self.option} {self.path}: not writable ({exc.strerror or exc})") from exc
            if not _try_lock(fd, self, patience=0.1):  # a probe() elsewhere holds it for microseconds only
                os.close(fd)
                self._undo_mkdir()
                raise self._busy()
            # The previous owner may have removed the lock file between our open and our lock: then we hold a
            # lock on a file nobody else will open, and must lock the one now at the path instead.
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """End the claim; without a checkpoint, take back what this run wrote (see the module docstring)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self.new and not (self.path / "last.pt").exists():
                self._remove_own_files()
            # Unlink while still holding the lock: a run that opened the old file then finds it gone (claim()
            # compares inodes) and locks the new one, so two runs never both own the directory.
            try:
                os.unlink(self.path / LOCK_NAME)
            except OSError:
                pass
            if self._created:
                try:
                    self.path.rmdir()  # only when empty: a run that saved a checkpoint keeps its directory
                except OSError:
                    pass
        finally:
            os.close(fd)

    def __enter__(self) -> RunDir:
        return self.claim()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _remove_own_files(self) -> None:
        for name in RUN_FILES:
            try:
                (self.path / name).unlink()
            except OSError:
                pass
        try:
            leftovers = [p for p in self.path.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
        except OSError:
            leftovers = []
        for p in leftovers:
            try:
                p.unlink()
            except OSError:
                pass

    def _undo_mkdir(self) -> None:
        if self._created:
            try:
                (self.path / LOCK_NAME).unlink()
            except OSError:
                pass
            try:
                self.path.rmdir()
            except OSError:
                pass
            self._created = False

    def _busy(self) -> RunDirError:
        return RunDirError(f"{self.option} {self.path}: in use by another run ({holder(self.path)}); wait for it "
                           f"to end or choose another directory")


def default_run_dir(cfg: TrainConfig) -> Path:
    from nnkit.train.chain_model import is_chain

    base = Path("runs") / f"{'chain' if is_chain(cfg.arch) else cfg.arch}-{cfg.dataset.value}"
    p, i = base, 2
    while p.exists():
        p, i = Path(f"{base}-{i}"), i + 1
    return p


def check_run_dir(path: Path, resuming: bool) -> None:
    """Refuse, touching nothing, a --out that is a file or a directory holding anything (a new run goes into a
    new or empty directory; only --resume writes into a run directory again)."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path}: exists and is not a directory")
    if resuming or not path.is_dir():
        return
    try:
        entries = sorted(p.name for p in path.iterdir() if p.name != LOCK_NAME)  # a dead run's lock is no file
    except OSError as exc:
        raise RunDirError(f"--out {path}: cannot read the directory ({exc.strerror or exc})") from exc
    if "last.pt" in entries:
        raise RunDirError(f"--out {path}: holds a run already (last.pt); continue it with --resume {path} "
                          f"or choose another --out")
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise RunDirError(f"--out {path}: not empty ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'}: "
                          f"{shown}); a new run is written only into a new or empty directory, so choose "
                          f"another --out")


def prepare_run_dir(rundir: RunDir, resume: dict[str, Any] | None = None) -> Path:
    """Create the directory and own it (after the data and the model were checked, before training): writing
    the lock proves it writable. Whatever another run did before the lock was taken is checked again under it:
    a new run still needs an empty directory, a resumed one the checkpoint it loaded."""
    rundir.claim()
    check_run_dir(rundir.path, resuming=resume is not None)
    if resume is not None and "file_id" in resume and ckpt.file_id(resume["path"]) != resume["file_id"]:
        raise RunDirError(f"--resume {rundir.path}: {resume['path']} changed since it was read (another run "
                          f"wrote it meanwhile); run the same command again to continue from the new state")
    return rundir.path


def _try_lock(fd: int, rd: RunDir, patience: float = 0.0) -> bool:
    """An exclusive lock without waiting for a live holder (retried for `patience` seconds)."""
    import fcntl

    end = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirError(f"{rd.option} {rd.path}: cannot lock the run directory "
                                  f"({exc.strerror or exc})") from exc
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)
