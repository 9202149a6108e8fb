"""What the standalone benchmark scripts (``python -m bench.NAME``) share: their command line
and how they write their result file."""

from __future__ import annotations

import argparse
import json
import os
import pathlib

import tensorflow as tf


def arguments(description: str, argv=None) -> argparse.Namespace:
    """``--repeats`` (interleaved rounds) and ``--threads`` (TensorFlow's intra- and inter-op
    threads, set now: before the script runs a TensorFlow op)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2, help="intra- and inter-op threads")
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    return args


def write(path: pathlib.Path, result: dict, shown: tuple[str, ...] | None = None) -> None:
    """Writes ``result`` (its ``machine`` given the load average now) to ``path`` and prints
    it, or its ``shown`` keys."""
    result["machine"]["load_average_end"] = os.getloadavg()
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in shown} if shown else result, indent=1))
