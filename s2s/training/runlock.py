"""One writer per run folder: a lock file holding the owner's pid and host.

``acquire`` creates ``RUN/.lock`` (or takes over one left by a process of this host that
is gone, with a warning) and refuses, naming the holder, while another live process has
it; ``release`` removes it, and so does the end of the process. Two ``s2s train``
commands pointed at one folder would otherwise both train, each overwriting the other's
checkpoints.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
from pathlib import Path

from s2s.errors import S2SError

log = logging.getLogger(__name__)

NAME = ".lock"
_held: set[Path] = set()
_registered = False  # the exit handler, once


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that has exited but whose parent has not collected it yet (Linux's
    /proc says state Z): killed, it holds no lock; elsewhere False."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return False
    return any(
        line.split()[1:2] == ["Z"] for line in status.splitlines() if line.startswith("State:")
    )


def _holder(path: Path) -> tuple[int, str] | None:
    try:
        pid, host = path.read_text(encoding="utf-8").split(maxsplit=1)
        return int(pid), host.strip()
    except (OSError, ValueError):
        return None  # gone meanwhile, or cut short: no live owner can be named


def acquire(folder: Path) -> None:
    folder = Path(folder)
    path = folder / NAME
    me = f"{os.getpid()} {socket.gethostname()}\n"
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        holder = _holder(path)
        if holder is not None and holder[0] != os.getpid():
            pid, host = holder
            if host != socket.gethostname() or _alive(pid):
                raise S2SError(
                    f"run folder {folder} is in use by process {pid} on {host} "
                    f"(lock file {path}); wait for it to finish, or delete the lock "
                    "if that process is gone"
                ) from None
            log.warning("taking over %s from process %d, which is gone", path, pid)
        tmp = path.with_name(f"{NAME}.{os.getpid()}")
        tmp.write_text(me, encoding="utf-8")
        os.replace(tmp, path)
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(me)
    global _registered
    if not _registered:
        atexit.register(_release_all)
        _registered = True
    _held.add(path)


def release(folder: Path) -> None:
    path = Path(folder) / NAME
    if path in _held:
        _held.discard(path)
        holder = _holder(path)
        if holder is not None and holder[0] == os.getpid():
            path.unlink(missing_ok=True)


def _release_all() -> None:
    for path in list(_held):
        release(path.parent)
