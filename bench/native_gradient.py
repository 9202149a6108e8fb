"""Issue 15, goal 2: the maxout's tie-sharing gradient as one C++ kernel, measured; not adopted.

``python -m bench.native_gradient`` (about 2 minutes; needs ``g++``) compiles
``native_gradient.cc`` against the installed TensorFlow's headers (``tf.sysconfig``) into a
temporary directory, checks that its gradient is bitwise the library's (float32, bfloat16,
float64, half; two, three and four pieces; ties, infinities and a NaN), and writes
``results/native_gradient.json``:

- ``gradient_alone``: the default student's first maxout gradient (128 x 24 x 24 x 32),
  the library's TensorFlow ops against the kernel, interleaved rounds;
- ``train_steps``: the ``library``, ``ties_one`` and ``native_gradient`` train steps of
  ``mnist_fitnet`` and ``mnist_teacher`` (:func:`bench.maxout_alternatives.pool_maxout_steps`),
  with goal 2's ratio for each.

Why it matters for goal 2: a cheaper maxout speeds the teacher's step as well as the
student's, so the *ratio* of their GFLOP/s moves only by the difference of the two shares.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import tempfile

import numpy as np
import tensorflow as tf

from bench import maxout_alternatives, standalone, timing
from bench.run import machine
from fitnets_tf import maxout

SOURCE = pathlib.Path(__file__).with_suffix(".cc")
RESULTS = pathlib.Path(__file__).parent / "results" / "native_gradient.json"


def build(directory: str):
    """The kernel's op module, compiled into ``directory``."""
    compiler = shutil.which("g++")
    if compiler is None:
        raise SystemExit("bench.native_gradient needs g++ (apt-get install g++).")
    library = pathlib.Path(directory) / "native_gradient.so"
    # No -march: the build machine may not be the one that runs it. No FMA contraction: the
    # kernel must round as TensorFlow's separate ops do.
    subprocess.run([compiler, "-shared", "-fPIC", "-O3", "-ffp-contract=off", str(SOURCE),
                    "-o", str(library), *tf.sysconfig.get_compile_flags(),
                    *tf.sysconfig.get_link_flags()], check=True, capture_output=True)  # fmt: skip
    return tf.load_op_library(str(library))


def native(kernel):
    """A ``max_of_pieces`` with the library's forward and the kernel's gradient."""

    def max_of_pieces(z, pieces: int, ties: str = "share"):
        if pieces == 1 or ties != "share":
            return maxout.max_of_pieces(z, pieces, ties)
        return maxout_alternatives._with_gradient(
            z, pieces, lambda z, _, out, upstream: kernel.fitnets_maxout_gradient(
                z, out, upstream, pieces=pieces))  # fmt: skip

    return max_of_pieces


def same_as_library(max_of_pieces, seed: int = 0) -> dict[str, bool]:
    """Per dtype and piece count: the gradient bitwise the library's (NaNs' sign bits aside)."""
    rng = np.random.default_rng(seed)
    found = {}
    for dtype in (tf.float32, tf.bfloat16, tf.float64, tf.float16):
        for pieces in (2, 3, 4):
            z = rng.integers(-2, 3, size=(3, 5, 7, 6 * pieces)).astype(np.float32)
            z[0, 0, 0, 0] = np.nan
            z[0, 0, 1, 0] = z[0, 0, 1, 6] = np.inf  # a tie of infinities: inf - inf is NaN
            z = tf.constant(z, dtype)
            upstream = tf.constant(rng.normal(size=(3, 5, 7, 6)), dtype)
            gradients = []
            for function in (maxout.max_of_pieces, max_of_pieces):
                with tf.GradientTape() as tape:
                    tape.watch(z)
                    out = function(z, pieces)
                gradient = tape.gradient(out, z, output_gradients=upstream)
                gradients.append(tf.cast(gradient, tf.float64).numpy())
            library, kernel = gradients
            signs = np.isnan(library) | (np.signbit(library) == np.signbit(kernel))
            found[f"{dtype.name}/{pieces}"] = bool(
                np.array_equal(library, kernel, equal_nan=True) and signs.all()
            )
    return found


def gradient_alone(kernel, repeats: int, calls: int = 20) -> dict:
    z = tf.random.stateless_normal((128, 24, 24, 32), seed=(0, 0))
    upstream = tf.random.stateless_normal((128, 24, 24, 16), seed=(0, 1))
    out = tf.reduce_max(tf.reshape(z, (128, 24, 24, 2, 16)), axis=-2)
    library = tf.function(lambda: maxout._pieces_gradient(tf.split(z, 2, axis=-1), out, upstream))
    fused = tf.function(lambda: kernel.fitnets_maxout_gradient(z, out, upstream, pieces=2))

    def repeat(function):
        def run():
            for _ in range(calls):
                result = function()
            result.numpy()

        return run

    times = timing.interleaved({"library": repeat(library), "native": repeat(fused)},
                               repeats=repeats)  # fmt: skip
    return {"ms": timing.summary(times, calls),
            "native_over_library": timing.ratio(times, "native", "library")}  # fmt: skip


def train_steps(kernel, repeats: int) -> dict:
    variants = {name: maxout_alternatives.VARIANTS[name] for name in ("library", "ties_one")}
    variants["native_gradient"] = (lambda: maxout_alternatives.maxout_as(native(kernel)), {})
    with maxout_alternatives._patched(maxout_alternatives, "VARIANTS", variants):
        return maxout_alternatives.pool_maxout_steps(repeats)


def main(argv=None) -> None:
    args = standalone.arguments(__doc__.splitlines()[0], argv)
    with tempfile.TemporaryDirectory() as directory:
        kernel = build(directory)
        result = {"machine": machine(), "same_as_library": same_as_library(native(kernel)),
                  "gradient_alone": gradient_alone(kernel, args.repeats),
                  "train_steps": train_steps(kernel, args.repeats)}  # fmt: skip
    standalone.write(RESULTS, result)


if __name__ == "__main__":
    main()
