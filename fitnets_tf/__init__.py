"""fitnets_tf: FitNets (Romero et al., ICLR 2015) for Keras 3 on TensorFlow."""

# ruff: noqa: E402 (the imports below come after the programs' start-up, on purpose)
# Before TensorFlow loads, and only in fitnets_tf's own programs (python -m fitnets_tf.train,
# fitnets-train, ...): quiets TensorFlow's start-up lines and refuses a malformed flagfile line.
from fitnets_tf.cli import startup as _startup

_startup.prepare()

# Imported for the classes a run's .keras files refer to (maxout and fused batch norm layers,
# the fitted preprocessing, learning-rate schedules): `import fitnets_tf` alone lets them load.
from fitnets_tf import batch_norm, callbacks, layers, losses, preprocessing, recipes, regressor
from fitnets_tf.distiller import Distiller, make_hint_path

__version__ = "0.1.0"

__all__ = [
    "Distiller", "make_hint_path", "batch_norm", "callbacks", "layers", "losses", "preprocessing",
    "recipes", "regressor",
]  # fmt: skip
