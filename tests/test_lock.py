"""One writer per run directory: a second process is refused naming the holder; a dead one's
lock is taken over without cleanup; a distributed search's chief and workers share theirs."""

import errno
import fcntl
import os
import signal
import subprocess
import sys
import threading

import pytest

from fitnets_tf.errors import DiskFullError
from fitnets_tf.run import lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HOLD = "import sys, time; from fitnets_tf.run import lock\nwith lock.hold(sys.argv[1]):\n" \
        "    print('held', flush=True); time.sleep(600)"  # fmt: skip


def _holder(workdir):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(workdir)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, monkeypatch):
    flocks, flock = [], fcntl.flock

    def recorded(fd, operation):
        flocks.append(operation)
        return flock(fd, operation)

    monkeypatch.setattr(lock.fcntl, "flock", recorded)
    proc = _holder(tmp_path)
    try:
        with pytest.raises(lock.WorkdirBusyError) as info, lock.hold(tmp_path):
            pass
        # At once, not after a wait: the lock is only ever asked for without blocking.
        assert flocks and all(op & fcntl.LOCK_NB for op in flocks)
        message = str(info.value)
        assert f"PID {proc.pid} on " in message and "since 20" in message
        assert "use another directory" in message
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, sig):
    proc = _holder(tmp_path)
    proc.send_signal(sig)
    proc.wait()
    with lock.hold(tmp_path) as path:  # no manual cleanup needed
        assert f'"pid": {os.getpid()}' in path.read_text()
    assert path.read_text() == ""  # released: it names nobody


def test_nested_hold_in_one_process_is_allowed(tmp_path):
    with lock.hold(tmp_path), lock.hold(tmp_path / "."):
        pass
    with lock.hold(tmp_path):  # and released after
        pass


def _in_another_thread(take):
    """``take()`` called in another thread; its result or its exception."""
    import threading

    outcome = {}

    def run():
        try:
            outcome["result"] = take()
        except Exception as e:  # noqa: BLE001  (handed to the test)
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return outcome


def _enter(context):
    with context:
        return "entered"


@pytest.mark.parametrize("kind", ["run directory", "lock file"])
def test_a_lock_held_by_one_thread_is_refused_to_another_of_the_same_process(tmp_path, kind):
    # Nested holds pass through only in the thread that holds: two threads exporting to one
    # path (or training into one run directory) would replace each other's files.
    def taking():
        if kind == "run directory":
            return lock.hold(tmp_path)
        return lock.hold_file(tmp_path / ".out.export-lock", LookupError)

    with taking():
        refused = _in_another_thread(lambda: _enter(taking()))
    expected = lock.WorkdirBusyError if kind == "run directory" else LookupError
    assert isinstance(refused.get("error"), expected), refused
    assert f"PID {os.getpid()} on " in str(refused["error"])
    assert _in_another_thread(lambda: _enter(taking())) == {"result": "entered"}  # released


def test_search_workers_share_the_directory_and_nobody_else_does(tmp_path, monkeypatch):
    from fitnets_tf import search

    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    with search.hold(tmp_path):
        for worker in ("tuner0", "tuner1"):
            monkeypatch.setenv("KERASTUNER_TUNER_ID", worker)
            with search.hold(tmp_path):  # each worker locks its own id only
                pass
    proc = _holder(tmp_path)  # a lone train or search holds the directory
    try:
        monkeypatch.delenv("KERASTUNER_ORACLE_IP")
        with pytest.raises(lock.WorkdirBusyError, match="search directory"), search.hold(tmp_path):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_file_removed_by_its_holder_meanwhile_is_opened_again(tmp_path, monkeypatch):
    # Its holder removed the file between this process's open and flock: that flock holds a
    # file no longer at the path, which a third process could create and lock as well.
    import fcntl

    path = tmp_path / ".out.export-lock"
    real, calls = fcntl.flock, []

    def flock(fd, operation):
        if not calls:
            path.unlink()  # the holder's last act, at just this moment
        calls.append(operation)
        return real(fd, operation)

    path.write_text("")
    monkeypatch.setattr(lock.fcntl, "flock", flock)
    with lock.hold_file(path, RuntimeError) as held:
        assert len(calls) == 2 and held.is_file() and f'"pid": {os.getpid()}' in held.read_text()
    assert not path.exists()


def test_a_held_lock_file_refuses_with_the_holders_description(tmp_path):
    path = tmp_path / ".out.export-lock"
    script = ("import sys, time; from fitnets_tf.run import lock\n"
              "with lock.hold_file(sys.argv[1], RuntimeError):\n"
              "    print('held', flush=True); time.sleep(600)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        refused = pytest.raises(LookupError, match=f"^PID {proc.pid} on .* since 20")
        with refused, lock.hold_file(path, LookupError):
            pass
    finally:
        proc.kill()
        proc.wait()
    with lock.hold_file(path, LookupError):  # a killed holder's file: free, and then removed
        pass
    assert os.listdir(tmp_path) == []


def test_a_disk_full_when_naming_the_holder_names_the_directory(tmp_path, monkeypatch):
    # The lock file's holder is the first write of a run: on a full disk it was a bare OSError,
    # which the CLI printed as "Cannot write: the disk is full. Free space there" (where?).
    def no_room(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(lock.os, "pwrite", no_room)
    message = (f"The run directory {str(tmp_path)!r} has no room left (the disk is full), not "
               "even to name its holder in its lock file: nothing was written. Free space there, "
               "then run the same command again.")  # fmt: skip
    with pytest.raises(DiskFullError) as error, lock.hold(tmp_path):
        pytest.fail("held")
    assert str(error.value) == message
    assert lock.held(tmp_path) is False  # released


def test_a_holder_still_naming_itself_is_named_once_it_has(tmp_path):
    # Between a holder's flock and its write of its description the lock file is empty: a
    # second writer refused then said "in use by another process" (two multi-worker workers
    # given one --workdir, released together by the cluster's start, hit it).
    path = tmp_path / lock.LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, not yet described
    described = threading.Timer(0.05, os.pwrite, (fd, b'{"pid": 4242, "host": "h"}', 0))
    described.start()
    try:
        refused = pytest.raises(lock.WorkdirBusyError, match="is in use by PID 4242 on h")
        with refused, lock.hold(tmp_path):
            pass
    finally:
        described.join()
        os.close(fd)
