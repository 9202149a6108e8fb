"""fitnets_tf: FitNets (Romero et al., ICLR 2015) for Keras 3 on TensorFlow."""

from fitnets_tf import callbacks, layers, losses, recipes, regressor
from fitnets_tf.distiller import Distiller, make_hint_path

__version__ = "0.1.0"

__all__ = ["Distiller", "make_hint_path", "callbacks", "layers", "losses", "recipes", "regressor"]
