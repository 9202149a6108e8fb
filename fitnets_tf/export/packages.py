"""The optional packages an export format or a serving runtime needs, checked before any work.

``pip install fitnets_tf`` brings what the SavedModel, ``.keras`` and LiteRT exports need
(TensorFlow converts LiteRT, and ``tf.lite.Interpreter`` runs it when ``ai-edge-litert`` is
absent). ONNX needs the ``export`` extra. Without this check, a missing converter was found
only when its writer ran: ``--format=all`` after the SavedModel and ``.keras`` files had been
written, and a run timing ONNX Runtime (the default experiment does) after all its training.
Only whether each module can be found is checked here, so nothing heavy is imported.
"""

from __future__ import annotations

import importlib.util

from fitnets_tf.errors import RuntimeUnavailableError

EXTRA = "pip install 'fitnets_tf[export]'"
# The importable modules each job needs beyond the base install: to write an ONNX file
# (tf2onnx; onnx checks it), to quantize one (ONNX Runtime's quantizer infers shapes with
# sympy, which it does not declare), and to time one in ONNX Runtime (written, then run).
NEEDS = {
    "onnx": ("tf2onnx", "onnx"),
    "onnx_int8": ("tf2onnx", "onnx", "onnxruntime", "sympy"),
    "onnxruntime": ("tf2onnx", "onnx", "onnxruntime"),
}


def missing(job: str) -> list[str]:
    """The modules of ``NEEDS[job]`` that are not installed (none for a job not listed)."""
    return [name for name in NEEDS.get(job, ()) if importlib.util.find_spec(name) is None]


def require(job: str, what: str, alternative: str = "") -> None:
    """Refuses ``job`` (a key of :data:`NEEDS`) when a module it needs is not installed.

    ``what`` names the job for the user, ``alternative`` the way to go on without it.

    Raises:
        RuntimeUnavailableError: naming the missing modules and the extra that installs them.
    """
    if absent := missing(job):
        raise RuntimeUnavailableError(
            f"{what} needs {', '.join(absent)}, which {'is' if len(absent) == 1 else 'are'} not "
            f"installed: `{EXTRA}` installs {'it' if len(absent) == 1 else 'them'}"
            f"{', or ' + alternative if alternative else ''}. Nothing was written."
        )
