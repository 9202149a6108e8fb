"""TF_CPP_MIN_LOG_LEVEL applied to the INFO lines TensorFlow's own filter lets through.

TensorFlow 2.21 writes some INFO lines to stderr (file descriptor 2) where no Python setting
reaches them: absl's C++ logging before anything initialises it (oneDNN, CPU features, at
import), LiteRT's "Created ... XNNPACK delegate", the LiteRT quantizer's ``printf``. Where
TF_CPP_MIN_LOG_LEVEL hides INFO lines (1 or more, as fitnets_tf's programs set by default),
:func:`info_lines_dropped` drops these from descriptor 2; with it unset, 0 or invalid, nothing
is touched. Standard library only: the programs use it while TensorFlow is imported.
"""

from __future__ import annotations

import contextlib
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
    sys.stderr.flush()
    original = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(original, 2)
            os.close(original)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(piece in line for piece in noise):
                    sys.stderr.write(line)
            sys.stderr.flush()
