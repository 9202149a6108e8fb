"""``tf.distribute`` strategies by name, for the CLI and the tuner, and the batches they need.

The Distiller scales its losses per replica itself (see ``losses.per_replica_mean``), so
any of these works with it; build the models and compile inside ``strategy.scope()``.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from fitnets_tf.errors import ConfigError, UserError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


class ClusterTimeoutError(UserError, TimeoutError):
    """The workers of a multi-worker run did not all join the cluster in the time allowed."""


def make_strategy(
    name: str, tpu: str | None = None, *, cluster_timeout: float | None = None
) -> tf.distribute.Strategy:
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
        cluster_timeout: for ``"multi_worker"``, the seconds a worker waits for every worker
            of ``TF_CONFIG`` to join the cluster before it raises ``ClusterTimeoutError``
            (``None`` or 0: TensorFlow's own wait, without end). Only the first call's counts.

    Raises:
        ClusterTimeoutError: some worker did not join within ``cluster_timeout`` seconds.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name not in STRATEGIES:
        raise ConfigError(f"`strategy` must be one of {STRATEGIES}. Received: strategy={name!r}")
    if name not in _MADE:
        _MADE[name] = _make(name, tpu, cluster_timeout)
    return _MADE[name]


def described(strategy: tf.distribute.Strategy) -> str:
    """A line for the run's log naming a strategy's replicas (with a newline before it), or ""
    for the default one. A MirroredStrategy on a machine without GPUs has one replica, on the
    CPU: the run then trains as without it, and says so."""
    if not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy():
        return ""
    replicas = strategy.num_replicas_in_sync
    devices = getattr(strategy.extended, "worker_devices", ())
    alone = ": one device, so it trains as it would without one" if replicas == 1 else ""
    return (f"\nstrategy: {type(strategy).__name__}, {replicas} replica"
            f"{'s' if replicas != 1 else ''} in sync ({', '.join(devices)}){alone}")


# Keyed on the name alone: a second strategy of one name would share the first's collective
# keys (see make_strategy), whatever the other arguments.
_MADE: dict[str, tf.distribute.Strategy] = {}


def _make(name: str, tpu: str | None, cluster_timeout: float | None):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return _joined_cluster(cluster_timeout)
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _joined_cluster(timeout: float | None) -> tf.distribute.MultiWorkerMirroredStrategy:
    """``MultiWorkerMirroredStrategy`` over ``TF_CONFIG``'s cluster, made once every worker has
    joined it, or ``ClusterTimeoutError`` after ``timeout`` seconds.

    TensorFlow waits for the cluster without end: a worker that stopped before joining (a bad
    flag on its host, a crash, a host never started) left the others waiting for good.
    """
    _check_tf_config(os.environ.get("TF_CONFIG"))
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if timeout and _coordinated(resolver):
        _bound_registration(resolver, timeout)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except tf.errors.DeadlineExceededError as timed_out:
        raise ClusterTimeoutError(_not_formed_message(resolver, timeout, timed_out)) from None


_TF_CONFIG_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}\' on the first host, index 1 on '
                      "the second")  # fmt: skip


def _check_tf_config(text: str | None) -> None:
    """Refuses a ``TF_CONFIG`` that cannot describe this worker's cluster, before any worker
    waits for it: TensorFlow raised a JSON or ``ValueError`` traceback, and with none set
    trained this worker alone under the name of a multi-worker run."""
    problem = None
    if not text:
        problem = "TF_CONFIG is not set"
    else:
        try:
            config = json.loads(text)
        except ValueError as e:
            problem = f"TF_CONFIG is not JSON ({e})"
        else:
            problem = _tf_config_problem(config)
    if problem:
        raise ConfigError(
            f"--strategy=multi_worker reads the cluster and this worker's role from the TF_CONFIG "
            f"environment variable: {problem}. Set it on every host, e.g. {_TF_CONFIG_EXAMPLE}; "
            "or use --strategy=mirrored for the GPUs of one host."
        )


def _tf_config_problem(config) -> str | None:
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        return 'TF_CONFIG has no "cluster" (a dict of roles to their addresses)'
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task:
        return 'TF_CONFIG has no "task" (this worker\'s {"type": ..., "index": ...})'
    kind, index = task["type"], task.get("index", 0)
    hosts = config["cluster"].get(kind)
    if not hosts:
        return f"its task is {kind} {index}, but its cluster lists no {kind}"
    if not isinstance(index, int) or not 0 <= index < len(hosts):
        return (f"its task is {kind} {index}, but its cluster lists {len(hosts)} {kind}"
                f"{'s' if len(hosts) != 1 else ''} (indices from 0)")  # fmt: skip
    return None


_COORDINATED_JOBS = ("chief", "worker")  # the roles MultiWorkerMirroredStrategy coordinates


def _coordinated(resolver) -> bool:
    return bool(resolver.cluster_spec().jobs) and resolver.task_type in _COORDINATED_JOBS


def _bound_registration(resolver, timeout: float) -> None:
    """Configures TensorFlow's coordination service as ``MultiWorkerMirroredStrategy`` would
    (which then keeps it), with every worker's registration bounded by ``timeout`` seconds.

    The strategy exposes no such option. Its own configuration leaves the registration
    unbounded; a registration barrier with a timeout makes the leader fail the barrier, and
    the other workers their connection to it, once the time is up (DEADLINE_EXCEEDED).
    """
    from tensorflow.python.eager import context  # noqa: PLC0415

    spec = resolver.cluster_spec()
    jobs = [job for job in _COORDINATED_JOBS if job in spec.jobs]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{jobs[0]}/replica:0/task:0",  # the chief if any: the strategy's
        cluster_register_timeout_in_ms=max(int(timeout * 1000), 1),
    )
    config = context.context().coordination_service  # the message the context will use
    for job in jobs:  # added to the message: no import of the proto module's moving path
        config.coordinated_job_list.add(name=job, num_tasks=spec.num_tasks(job))
    config.cluster_register_with_barrier = True


def _not_formed_message(resolver, timeout, error) -> str:
    spec = resolver.cluster_spec()
    cluster = ", ".join(f"{job} {i} at {address}" for job in spec.jobs
                        for i, address in enumerate(spec.job_tasks(job)))  # fmt: skip
    said = str(error.message).strip().splitlines()[0]
    return (
        f"The multi-worker cluster did not form: this worker ({resolver.task_type} "
        f"{resolver.task_id}) waited {timeout:g} s for every worker of TF_CONFIG's cluster "
        f"({cluster}) to join, and some did not (TensorFlow: {said!r}). Start the same command "
        "on every host TF_CONFIG lists; a worker that stopped before joining (a bad flag on "
        "its host, say) printed why. Check that each address is reachable from this host, or "
        "give workers that start later more time with --cluster_timeout (0: wait without end)."
    )


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
