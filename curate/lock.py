"""One process per run folder: a second ``curate run`` / ``resume`` on a folder in use fails fast.

Two processes on one journal each buy what the other has not journalled yet: the same item can be
billed twice, and the slower one overwrites rounds with stale counts. The lock is an advisory
``flock`` on ``RUN_DIR/.curate.lock`` (released by the kernel when the holder dies, so a killed run
never leaves a stale lock), taken before anything is built or bought. It is re-entrant inside one
process: the run lifecycle holds it and the loop it starts takes it again.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from curate.errors import ConfigError

__all__ = ["LOCK_FILE", "RunFolderBusy", "run_lock"]

LOCK_FILE = ".curate.lock"

_held: dict[Path, list] = {}  # folder -> [open lock file, depth]


class RunFolderBusy(ConfigError):
    """Another process holds the run folder."""


@contextmanager
def run_lock(run_dir: str | Path):
    folder = Path(run_dir).resolve()
    if folder in _held:
        _held[folder][1] += 1
        try:
            yield
        finally:
            _held[folder][1] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 (held for the block, closed below)
    try:
        _acquire(handle, folder)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _held[folder] = [handle, 1]
        try:
            yield
        finally:
            del _held[folder]
    finally:
        handle.close()  # closing the file releases the lock


def _acquire(handle, folder: Path) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks; run folders are then not guarded
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "unknown"
        raise RunFolderBusy(f"{folder} is in use by another curate process (pid {pid}). Two processes on one run "
                            "folder could buy the same label twice: wait for it to finish (or stop it), then "
                            f"`curate resume {folder}`.") from None
