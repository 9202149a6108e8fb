"""``python -m fitnets_tf.train``: the command line of :mod:`fitnets_tf.cli.train`."""

from fitnets_tf.cli.train import entry_point

if __name__ == "__main__":
    entry_point()
