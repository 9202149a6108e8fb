"""``python -m fitnets_tf.pretrained publish RUN_DIR NAME FLAGFILE``: ship a run's teacher.

``FLAGFILE`` is the config that trained it (the manifest records the command to reproduce it).
"""

import sys

from fitnets_tf import pretrained


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "publish":
        print(__doc__.strip(), file=sys.stderr)
        return 2
    entry = pretrained.publish(*argv[1:])
    print(f"{argv[2]}: {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
