"""``tf.distribute`` strategies by name, for the CLI and the tuner.

The Distiller scales its losses per replica itself (see ``distiller._per_replica_mean``), so
any of these works with it; build the models and compile inside ``strategy.scope()``.
"""

from __future__ import annotations

import tensorflow as tf

from fitnets_tf.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(name: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """Returns the strategy called ``name``.

    Args:
        name: ``"default"`` (one device: the GPU if there is one, else the CPU),
            ``"mirrored"`` (every local GPU, all-reduce), ``"multi_worker"`` (several hosts;
            each reads its role from the ``TF_CONFIG`` environment variable) or ``"tpu"``.
        tpu: TPU name or address for ``"tpu"`` (``None``: the local / Colab / Cloud TPU VM).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"`strategy` must be one of {STRATEGIES}. Received: strategy={name!r}")
