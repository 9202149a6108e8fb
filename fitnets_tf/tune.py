"""``python -m fitnets_tf.tune``: the command line of :mod:`fitnets_tf.cli.tune`."""

from fitnets_tf.cli.tune import entry_point

if __name__ == "__main__":
    entry_point()
