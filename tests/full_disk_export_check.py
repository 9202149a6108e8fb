"""Exports a student to every format, then fails to replace each artifact on a "full disk".

The mechanism of tests/full_disk_check.py: RLIMIT_FSIZE caps the size of any file this process
writes (SIGXFSZ ignored, so writes fail with EFBIG as they would with ENOSPC). Prints one JSON
line for tests/test_export.py.
"""

import hashlib
import json
import os
import pathlib
import resource
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from fitnets_tf import export  # noqa: E402


def digest(path: pathlib.Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    sha = hashlib.sha256()
    for file in files:
        sha.update(str(file.relative_to(path.parent)).encode() + file.read_bytes())
    return sha.hexdigest()


def student(width: int) -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(width, name="hidden")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))


out = pathlib.Path(sys.argv[1])
keras.utils.set_random_seed(0)
written = export.export_student(student(4), out, "all")
before = {fmt: digest(path) for fmt, path in written.items()}

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
big = student(20_000)  # ~5 MB of weights in every format
errors = {}
for fmt, path in written.items():
    try:
        export.export_student(big, path, fmt, overwrite=True)
        errors[fmt] = None
    except Exception as e:  # noqa: BLE001
        errors[fmt] = [type(e).__name__, str(e)]
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))

print(json.dumps({
    "errors": errors,
    "intact": {fmt: digest(path) == before[fmt] for fmt, path in written.items()},
    "names": sorted(os.listdir(out)),
    "expected_names": sorted(path.name for path in written.values()),
}))  # fmt: skip
