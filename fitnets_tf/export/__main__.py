"""``python -m fitnets_tf.export``: the command line of :mod:`fitnets_tf.cli.export`."""

from fitnets_tf.cli.export import entry_point

if __name__ == "__main__":
    entry_point()
