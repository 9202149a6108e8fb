"""TF_CPP_MIN_LOG_LEVEL applied to the INFO lines TensorFlow's own filter lets through, and
to a native decoder's lines on a file that its caller's error names.

TensorFlow 2.21 writes some INFO lines to stderr (file descriptor 2) where no Python setting
reaches them: absl's C++ logging before anything initialises it (oneDNN, CPU features, at
import), LiteRT's "Created ... XNNPACK delegate", the LiteRT quantizer's ``printf``. Where
TF_CPP_MIN_LOG_LEVEL hides INFO lines (1 or more, as fitnets_tf's programs set by default),
:func:`info_lines_dropped` drops these from descriptor 2; with it unset, 0 or invalid, nothing
is touched. Standard library only: the programs use it while TensorFlow is imported.

Under the same condition, :func:`failing_calls_quiet` drops what a native call wrote when it
raises an error its caller restates: TensorFlow's JPEG decoder lets libjpeg print its own words
on a file it cannot decode ("Premature end of JPEG data", "Improper call to JPEG library in
state 201", ...), naming no file, before the op raises; the caller's message names the file.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile

# Each is a piece of one INFO line, said to every user and acted on by none.
TENSORFLOW_IMPORT = (
    "All log messages before absl::InitializeLog() is called",
    "port.cc:153] oneDNN custom operations are on",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",
)
LITERT_INTERPRETER = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)
LITERT_QUANTIZER = ("fully_quantize: ",)


def info_hidden() -> bool:
    """Whether TF_CPP_MIN_LOG_LEVEL asks that INFO lines be hidden."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip()
    return level.isdigit() and int(level) >= 1


@contextlib.contextmanager
def info_lines_dropped(noise: tuple[str, ...]):
    """Drops the lines containing any of ``noise`` from what descriptor 2 receives meanwhile.

    The rest is written back when the block ends, in order, also when it raises. A temporary
    file, not a pipe: a pipe read by a thread would deadlock once a native call that holds
    the GIL filled it.
    """
    if not info_hidden():
        yield
        return
    with tempfile.TemporaryFile() as captured:
        try:
            with _descriptor_2_into(captured):
                yield
        finally:
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(piece in line for piece in noise):
                    sys.stderr.write(line)
            sys.stderr.flush()


@contextlib.contextmanager
def _descriptor_2_into(captured):
    """Within the block, descriptor 2 writes into the file ``captured``; yields a descriptor
    of what it was, which the block may write to (closed when the block ends)."""
    sys.stderr.flush()
    original = os.dup(2)
    os.dup2(captured.fileno(), 2)
    try:
        yield original
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)
        os.close(original)


@contextlib.contextmanager
def failing_calls_quiet():
    """Yields ``call(function, *args, **kwargs)``: ``function``'s result, and what descriptor 2
    received during it passed on as it returns; dropped if it raises an ``Exception``, which
    the caller turns into its own message. Only where :func:`info_hidden`, else a plain call.

    Lines another thread writes during a failing call are dropped with them: use it around
    calls that are all the process does meanwhile (a folder's decoding pass).
    """
    if not info_hidden():
        yield lambda function, *args, **kwargs: function(*args, **kwargs)
        return
    # One file for the block, emptied after each call: decoding a folder's images one by one
    # makes a call per image (tens of thousands in a large folder), and a call costs a few
    # system calls.
    with tempfile.TemporaryFile() as captured, _descriptor_2_into(captured) as original:
        try:
            yield functools.partial(_quiet_if_failing, captured.fileno(), original)
        finally:
            _pass_on(captured.fileno(), original)  # what the block wrote between calls


def _quiet_if_failing(captured: int, original: int, function, *args, **kwargs):
    try:
        result = function(*args, **kwargs)
    except Exception:
        _pass_on(captured, None)
        raise
    _pass_on(captured, original)
    return result


def _pass_on(captured: int, original: int | None) -> None:
    """Writes what ``captured`` (descriptor 2 meanwhile) holds to ``original`` (None: drops
    it), and empties it for the next call."""
    sys.stderr.flush()
    size = os.lseek(captured, 0, os.SEEK_CUR)  # descriptor 2 shares this offset
    if not size:
        return
    written = memoryview(os.pread(captured, size, 0) if original is not None else b"")
    while written:
        written = written[os.write(original, written) :]
    os.ftruncate(captured, 0)
    os.lseek(captured, 0, os.SEEK_SET)
