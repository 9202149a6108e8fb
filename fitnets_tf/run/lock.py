"""One writer per run directory: a lock a second process is refused by, naming the holder.

The lock is an advisory ``flock`` on a file in the directory, so the kernel releases it when
its process ends in any way (``kill -9`` included): a lock left by a dead process is never in
the way and needs no cleanup. Beside the lock, the file holds who took it (host, PID, since
when, the command), which is what the refusal prints. On network filesystems ``flock`` is as
good as the server's lock manager: NFSv4 releases the locks of a crashed client when its lease
expires (about 90 s).

A distributed search shares its directory by design: its chief takes the directory's lock, and
each worker the lock of its own tuner id only (:func:`hold` with ``name``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import socket
import sys
import threading
import time
from collections.abc import Callable

from fitnets_tf.errors import WorkdirError
from fitnets_tf.run import io

LOCK_FILE = ".lock"
# The locks this process holds, each with the thread holding it: a nested ``hold`` of one of
# them in that thread (the CLI locks the directory before writing flags.txt, then
# ``experiment.run`` locks it again) is a no-op. Another thread's is refused as another
# process's would be (its flock on a second descriptor of the file fails).
_HELD: dict[pathlib.Path, int] = {}


class WorkdirBusyError(WorkdirError):
    """Another process holds the run directory."""


# A holder describes itself in the lock file just after it takes the lock: a process refused
# in between finds the file empty (two workers started together by their cluster did). How
# long to wait for the description before naming no one.
DESCRIPTION_WAIT_S = 1.0


def _read_holder(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):  # gone, or read while being written
        return {}


def _holder_text(path: pathlib.Path) -> str:
    deadline = time.monotonic() + DESCRIPTION_WAIT_S
    holder = _read_holder(path)
    while not holder and time.monotonic() < deadline:
        time.sleep(0.01)
        holder = _read_holder(path)
    if not holder:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("since", 0)))
    return (f"PID {holder.get('pid')} on {holder.get('host')} since {since} "
            f"({holder.get('command', '?')})")  # fmt: skip


def _describe_self() -> str:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
                       "command": " ".join(sys.argv)[:300]})  # fmt: skip


@contextlib.contextmanager
def _marked_held(path: pathlib.Path, release: Callable[[], object]):
    """Marks ``path`` as held by this thread for the ``with`` block (a nested hold of it
    passes through), then ``release``s it, still locked: what each kind of lock leaves."""
    _HELD[path] = threading.get_ident()
    try:
        yield
    finally:
        _HELD.pop(path, None)
        release()


@contextlib.contextmanager
def hold(directory: str | os.PathLike, what: str = "run directory", name: str = LOCK_FILE):
    """Holds ``directory``'s lock for the ``with`` block, or refuses at once.

    Args:
        directory: the run (or search, or export) directory; created if missing.
        what: how the refusal names it.
        name: the lock file's name (a distributed search's workers each lock their own).

    Raises:
        WorkdirBusyError: another live process holds it; the message names that process.
    """
    directory = pathlib.Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    path = (directory / name).resolve()
    if _HELD.get(path) == threading.get_ident():
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirBusyError(
                f"The {what} {str(directory)!r} is in use by {_holder_text(path)}. Two writers "
                "would overwrite each other's files: wait for it to finish or stop it, or use "
                "another directory."
            ) from None
        os.ftruncate(fd, 0)
        # The first write of a run: on a disk already full, named here rather than as a bare
        # OSError without a file name.
        where = repr(str(directory)).replace("{", "{{").replace("}", "}}")
        with io.disk_full_as_user_error(f"The {what} {where} has no room left ({{reason}}), not "
                                        "even to name its holder in its lock file: nothing was "
                                        "written. Free space there, then run the same command "
                                        "again."):  # fmt: skip
            os.pwrite(fd, _describe_self().encode(), 0)
        with _marked_held(path, release=lambda: os.ftruncate(fd, 0)):  # nobody to name
            yield path
    finally:
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def hold_file(path: str | os.PathLike, refusal: Callable[[str], Exception]):
    """Holds the lock file ``path`` for the ``with`` block and removes it after, or refuses at once.

    For a lock in a folder that is the user's (an export's output): :func:`hold` keeps its
    file, which is right in a run directory and litter anywhere else. A holder killed with
    SIGKILL leaves the file behind, unlocked; the next holder takes it and removes it.

    The file is removed while still locked. A process that opened it just before, and locks it
    once this one closes it, then holds a file no longer at ``path``: it sees that and opens
    ``path`` again, so two processes never both hold one path's lock.

    Args:
        path: the lock file; its directory must exist.
        refusal: makes the exception raised when a live process holds it, from a description
            of that process (PID, host, since when, its command).
    """
    path = pathlib.Path(path).expanduser().absolute()
    if _HELD.get(path) == threading.get_ident():
        yield path
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise refusal(_holder_text(path)) from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.stat(path), os.fstat(fd)):
                break
        os.close(fd)  # its holder removed it meanwhile: lock the one at ``path`` now
    try:
        try:
            os.ftruncate(fd, 0)  # a killed holder's description
            os.pwrite(fd, _describe_self().encode(), 0)
        except OSError:  # a full disk: no lock file left behind in the user's folder
            path.unlink(missing_ok=True)
            raise
        # Removed while still locked: see above.
        with _marked_held(path, release=lambda: path.unlink(missing_ok=True)):
            yield path
    finally:
        os.close(fd)


def held(directory: str | os.PathLike, name: str = LOCK_FILE) -> bool | None:
    """Whether a live process holds ``directory``'s lock ``name``; None if it was never taken.

    Probes with a shared lock, released at once: a process taking the lock at that very
    instant is refused as busy, and a retry succeeds.
    """
    path = pathlib.Path(directory).expanduser() / name
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock, if it got one
    return False
