"""``tf.distribute`` strategies by name, for the CLI and the tuner, and the batches they need.

The Distiller scales its losses per replica itself (see ``losses.per_replica_mean``), so
any of these works with it; build the models and compile inside ``strategy.scope()``.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from fitnets_tf.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(name: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """Returns the strategy called ``name``: made at the first call, the same one after.

    A run that tunes makes its stage 1 and its search under the strategy the flags name; two
    strategies of one process would share the keys of their collective ops (a second
    MirroredStrategy's all-reduce failed with "Shape mismatch in the collective instance"),
    and TensorFlow configures a multi-worker's collectives once per process.

    Args:
        name: ``"default"`` (one device: the GPU if there is one, else the CPU),
            ``"mirrored"`` (every local GPU, all-reduce), ``"multi_worker"`` (several hosts;
            each reads its role from the ``TF_CONFIG`` environment variable) or ``"tpu"``.
        tpu: TPU name or address for ``"tpu"`` (``None``: the local / Colab / Cloud TPU VM).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name not in STRATEGIES:
        raise ConfigError(f"`strategy` must be one of {STRATEGIES}. Received: strategy={name!r}")
    return _made_once(name, tpu)


@functools.cache
def _made_once(name: str, tpu: str | None) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def check_last_batches(datasets, strategy: tf.distribute.Strategy | None):
    """Returns ``datasets`` (a :class:`~fitnets_tf.data.Datasets`) if no batch ``fit`` reads
    leaves one of ``strategy``'s replicas (None: the default strategy's) without an example;
    else raises, before any training.

    A strategy splits each batch over its replicas, and a replica left with none fails inside
    its kernels (on CPU: "Number of ways to split should evenly divide the split dimension"),
    at the end of the first epoch. Only a split's last batch can be that small. Dropping it
    instead would leave the number of batches unknown, and with it the mid-epoch checkpoints
    and step-exact preemption, which need it.

    Raises:
        ConfigError: naming the split, and batch sizes that avoid it.
    """
    replicas = (strategy or tf.distribute.get_strategy()).num_replicas_in_sync
    size = datasets.batch_size
    splits = {"training": datasets.num_train_examples,
              "validation": datasets.num_validation_examples or 0}  # fmt: skip
    short = {name: n % size for name, n in splits.items() if 0 < n % size < replicas}
    if not short:
        return datasets
    name, left = next(iter(short.items()))
    fits = [b for b in range(max(replicas, size - 64), size + 65)
            if not any(0 < n % b < replicas for n in splits.values())]  # fmt: skip
    closest = sorted(fits, key=lambda b: abs(b - size))[:2]
    raise ConfigError(
        f"The last {name} batch holds {left} example(s) ({splits[name]} examples in batches of "
        f"{size}), fewer than the strategy's {replicas} replicas: a replica would get none and "
        f"fail. Use --batch_size={' or '.join(map(str, sorted(closest)))}, or change "
        "--validation_size or --limit."
    )
