"""What a fitnets_tf program does before TensorFlow loads.

``import fitnets_tf`` imports TensorFlow (a run's ``.keras`` files need its classes), and
``python -m fitnets_tf.train`` or ``fitnets-train`` imports the package before the program's
module: only the package's ``__init__`` runs early enough to refuse a malformed flagfile in a
fraction of a second instead of after the import. :func:`prepare` does it for fitnets_tf's own
programs and nothing for any other importer. Standard library only.
"""

from __future__ import annotations

import os
import sys

from fitnets_tf.cli import flagfiles

# The module ``python -m`` runs, or the console script's name, and the program's name.
PROGRAMS = {
    "fitnets_tf.train": "fitnets_tf.train", "fitnets-train": "fitnets_tf.train",
    "fitnets_tf.tune": "fitnets_tf.tune", "fitnets-tune": "fitnets_tf.tune",
    "fitnets_tf.export": "fitnets_tf.export", "fitnets-export": "fitnets_tf.export",
}  # fmt: skip


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


def prepare() -> None:
    """For a fitnets_tf program: refuse a malformed flagfile line."""
    program = program_of_process()
    if program is None:
        return
    flagfiles.check(sys.argv, program)
