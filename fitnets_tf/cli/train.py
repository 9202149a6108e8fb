r"""Runs a FitNets experiment: ``python -m fitnets_tf.train --flagfile=configs/X.flags``.

The flags are the options of :mod:`fitnets_tf.config` (see ``--helpfull``); they become an
:class:`~fitnets_tf.config.ExperimentConfig` handed to :func:`fitnets_tf.experiment.run`. With
no flagfile it runs the default experiment (real Fashion-MNIST, offline; see
``configs/fashion_mnist.flags``) changed by the flags given; naming other models drops what
belongs to the default's (its shipped teacher, its hint pair: ``config.default_for``).

Example::

    python -m fitnets_tf.train --flagfile=configs/smoke.flags --workdir=/tmp/smoke

``--list_layers`` prints the teacher's and the student's layers as the run would build them
(the hint/guided candidates marked) and the pair ``--hints=auto`` would choose, then exits
without training or writing anything.

SIGTERM or SIGINT (Ctrl-C) stops training after the step under way with a checkpoint and exits
with status 75 (EX_TEMPFAIL): the same command resumes, exactly. A second one exits at once.
"""

from __future__ import annotations

import sys

from absl import app, flags

from fitnets_tf.cli import common
from fitnets_tf.cli import flags as flag_lib

common.quiet_tensorflow()
flag_lib.define_experiment_flags()
# Not an option of the experiment: it asks what a run would use, and runs nothing.
flags.DEFINE_bool("list_layers", False, "Print the teacher's and student's layers (hint "
                  "candidates marked) and the hints=auto choice, then exit without training.")  # fmt: skip
FLAGS = flag_lib.FLAGS


@common.reports_user_errors("fitnets_tf.train")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from fitnets_tf import experiment, latency
    from fitnets_tf.run import cluster, io, layout, ownership, preemption

    config = flag_lib.validated_command_line(sys.argv)
    if FLAGS.list_layers:
        from fitnets_tf import hint_choice, stages

        teacher, student = experiment.models_of(config)
        hinted = any(mode in stages.HINT_MODES for mode in config.schedule.modes)
        pairs = config.hint_pairs() if hinted else ()  # checked as the run would use them
        print(hint_choice.describe_models(teacher, student, pairs, config.models.regressor))
        return
    # Before the directory is made, the lock file and flags.txt: a user's folder refused is
    # left as it was, and no folder is left inside an image folder. A multi-worker run's
    # workers form their cluster first (before any TensorFlow op) and agree on the refusals,
    # so that a worker refused its directory stops them all instead of leaving them waiting.
    strategy = cluster.strategy_for(config.runtime.strategy, config.runtime.cluster_timeout)

    def refusals():  # of this host and this worker's --workdir: they may differ between workers
        latency.check_timed_runtimes(config.runtime)
        ownership.claim(FLAGS.workdir, config, flags=True)

    cluster.claim(strategy, FLAGS.workdir, refusals)
    workdir = layout.prepare(FLAGS.workdir)
    try:
        # Before flags.txt: a refused second process, or a refused configuration (flags.txt
        # keeps describing the run in workdir), changes nothing.
        with cluster.hold(workdir, strategy, config.fingerprint()):
            flagfile = flag_lib.resolved_flagfile(config, FLAGS.workdir)
            with io.run_writes(workdir):  # a disk already full is named as the run's
                io.write_text(layout.RunLayout(workdir).flags, ownership.FLAGS_HEADER + flagfile)
            experiment.run(config, workdir, log=print)
    except preemption.Preempted as stopped:  # the lock is released by now
        print(f"fitnets_tf.train: {stopped}", file=sys.stderr, flush=True)
        sys.exit(preemption.EXIT_STATUS)


def entry_point():
    """``python -m fitnets_tf.train`` and the ``fitnets-train`` console script."""
    common.run(main, ("fitnets_tf.cli.flags", "fitnets_tf.cli.train"))
