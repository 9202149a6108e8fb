"""Caches the teacher's outputs to disk on a "full disk", then again with room, and compares.

The mechanism of tests/full_disk_check.py: RLIMIT_FSIZE caps the size of any file this process
writes (SIGXFSZ ignored, so writes fail with EFBIG as they would with ENOSPC). The shards are
~25 KB (8 rows of a 3 KB hint), over the cap. Prints one JSON line for
tests/test_teacher_cache.py.
"""

import json
import os
import resource
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from fitnets_tf import data, models, teacher_cache  # noqa: E402

directory = os.path.join(sys.argv[1], "teacher_cache")
datasets = data.load("synthetic", batch_size=64, seed=5, limit=192, validation_size=64)
teacher = models.build("mnist_teacher", (28, 28, 1), 10, seed=0, kernel_initializer="he_uniform")
hint = models.hint_layer_name("mnist_teacher")


def cache():
    return teacher_cache.cache_datasets(teacher, datasets, hint_layer=hint, memory_budget=100_000,
                                        directory=directory, log=lambda _: None)  # fmt: skip


signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
try:
    cache()
    error = None
except Exception as e:  # noqa: BLE001
    error = [type(e).__name__, str(e)]
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
left = sorted(os.listdir(directory))


def batches(train):
    datasets.epoch.assign(3)  # what EpochSync sets: both caches draw epoch 3's order
    return list(train)


# Room again: the cache is built and gives the in-memory cache's batches.
on_disk, in_memory = (
    batches(cache()[0]),
    batches(teacher_cache.cache_datasets(teacher, datasets, hint_layer=hint)[0]),
)
same = len(on_disk) == len(in_memory) == 3
for (features, labels), (expected, expected_labels) in zip(on_disk, in_memory, strict=True):
    same &= all(np.array_equal(features[k], expected[k]) for k in expected)
    same &= np.array_equal(labels, expected_labels)
print(json.dumps({"error": error, "left": left, "same": bool(same)}))
