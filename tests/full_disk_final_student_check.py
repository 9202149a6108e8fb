"""``python -m fitnets_tf.train`` whose final SavedModel finds no room; the arguments are its flags.

The mechanism of tests/full_disk_check.py (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail with
EFBIG as they would with ENOSPC), but only while the SavedModel is written: every checkpoint
and ``student.keras`` before it have room. For tests/test_resume.py.
"""

import os
import resource
import runpy
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fitnets_tf.export import writers  # noqa: E402

write_saved_model = writers.WRITERS["saved_model"]


def write_with_no_room(*args, **kwargs):
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))  # saved_model.pb alone is larger
    try:
        return write_saved_model(*args, **kwargs)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))


signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
writers.WRITERS["saved_model"] = write_with_no_room
sys.argv[0] = "fitnets_tf.train"
runpy.run_module("fitnets_tf.train", run_name="__main__", alter_sys=True)
