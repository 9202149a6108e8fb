"""``tf.distribute`` strategies by name, for the CLI and the tuner, and the batches they need.

The Distiller scales its losses per replica itself (see ``distiller._per_replica_mean``), so
any of these works with it; build the models and compile inside ``strategy.scope()``.
"""

from __future__ import annotations

import contextlib
import warnings

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


def every_replica_fed(batches):
    """``batches`` (a ``tf.data.Dataset``) without a batch smaller than the current strategy's
    number of replicas; anything else unchanged.

    A strategy splits each batch over its replicas, and a replica left without an example fails
    inside its kernels (on CPU: "Number of ways to split should evenly divide the split
    dimension"), with batch normalisation it would average nothing. Only an epoch's last batch
    can be that small: at most ``replicas - 1`` examples an epoch are left out, and so its
    number of batches is no longer known ahead (Keras counts them in the first epoch).
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas == 1 or not isinstance(batches, tf.data.Dataset):
        return batches

    def large_enough(*batch):
        return tf.shape(tf.nest.flatten(batch)[0])[0] >= replicas

    return batches.filter(large_enough)


@contextlib.contextmanager
def counting_fed_batches():
    """Within it, Keras does not warn when an :func:`every_replica_fed` dataset runs out.

    A filtered dataset's number of batches is unknown, so Keras counts them by running out of
    them in the first epoch, and says "Your input ran out of data" as if it were too short.
    """
    with warnings.catch_warnings():
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield
