"""Ship a run's teacher, or record the recipe of one already shipped.

    python -m fitnets_tf.pretrained publish RUN_DIR NAME FLAGFILE
    python -m fitnets_tf.pretrained recipe RUN_DIR NAME

``FLAGFILE`` is the config that trained it (the manifest records the command to reproduce it);
the run's configuration is recorded too: ``--stages=teacher`` retrains the teacher with it.
"""

import sys

from fitnets_tf import pretrained

COMMANDS = {"publish": (pretrained.publish, 3), "recipe": (pretrained.record_recipe, 2)}


def main(argv: list[str]) -> int:
    command, count = COMMANDS.get(argv[0] if argv else "", (None, 0))
    if command is None or len(argv) != count + 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    entry = command(*argv[1:])
    print(f"{argv[2]}: {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
