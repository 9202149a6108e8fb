"""What a fitnets_tf program does before TensorFlow loads.

``import fitnets_tf`` imports TensorFlow (a run's ``.keras`` files need its classes), and
``python -m fitnets_tf.train`` or ``fitnets-train`` imports the package before the program's
module: only the package's ``__init__`` runs early enough to quiet TensorFlow's start-up lines
and to refuse a malformed flagfile in a fraction of a second instead of after the import.
:func:`prepare` does both for fitnets_tf's own programs and nothing for any other importer.
Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import sys

from fitnets_tf import native_logs
from fitnets_tf.cli import flagfiles

# The module ``python -m`` runs, or the console script's name, and the program's name.
PROGRAMS = {
    "fitnets_tf.train": "fitnets_tf.train", "fitnets-train": "fitnets_tf.train",
    "fitnets_tf.tune": "fitnets_tf.tune", "fitnets-tune": "fitnets_tf.tune",
    "fitnets_tf.export": "fitnets_tf.export", "fitnets-export": "fitnets_tf.export",
}  # fmt: skip
# TensorFlow's C++ INFO and WARNING lines (oneDNN, CPU features, the LiteRT converter's
# passes) say nothing a user acts on; its errors still print.
QUIET_CPP_LOG_LEVEL = "2"
_VERBOSITY = ("-v", "--v", "-verbosity", "--verbosity")


def program_of_process() -> str | None:
    """Which fitnets_tf program this process runs, or None (a notebook, the tests, a script)."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    if script in PROGRAMS and "." not in script:
        return PROGRAMS[script]
    # While ``python -m pkg.mod`` imports pkg, runpy has set sys.argv[0] to "-m" and the module
    # is in the interpreter's own command line.
    original = getattr(sys, "orig_argv", [])
    if script == "-m" and "-m" in original[:-1]:
        return PROGRAMS.get(original[original.index("-m") + 1])
    return None


def verbosity(args: list[str]) -> int | None:
    """The absl ``-v``/``--verbosity`` the arguments (flagfile lines included) give last."""
    given, args = None, iter(args)
    for arg in args:
        name, sep, value = arg.partition("=")
        if name in _VERBOSITY:
            value = value if sep else next(args, "")
            with contextlib.suppress(ValueError):  # absl's own message refuses it
                given = int(value)
    return given


def quiet_tensorflow(argv: list[str]) -> None:
    """Sets TF_CPP_MIN_LOG_LEVEL unless the user has, or asked for absl's INFO (``-v 0``)."""
    lines = [line.text for path in flagfiles.flagfile_paths(argv)
             for line in flagfiles.flag_lines(path)]  # fmt: skip
    level = verbosity([*lines, *argv[1:]])
    if level is None or level < 0:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_CPP_LOG_LEVEL)


def prepare() -> None:
    """For a fitnets_tf program: refuse a malformed flagfile line, quiet TensorFlow."""
    program = program_of_process()
    if program is None:
        return
    flagfiles.check(sys.argv, program)
    quiet_tensorflow(sys.argv)
    with native_logs.info_lines_dropped(native_logs.TENSORFLOW_IMPORT):
        import tensorflow  # noqa: F401
