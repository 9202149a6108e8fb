"""The README's walk-through ("Distill your own model"), run as printed, on real images.

    python bench/walkthrough.py                    # 300 images per class, as the README reports
    python bench/walkthrough.py --per_class=30 --teacher_epochs=1 --workdir=/tmp/w  # a quick one

Makes, in a new folder, what the walk-through says you bring: ``images/`` (one sub-folder per
class, named so that sorting them gives Fashion-MNIST's label order, holding PNG files of the
real Fashion-MNIST *test* images), ``teacher.keras`` (a BN-ReLU CNN trained here on Fashion-MNIST
*training* images, which the folder does not hold) and ``student.keras`` (a thinner BN-ReLU
CNN, untrained: its architecture). Then runs each command of the README's walk-through block,
as printed there, with this checkout's console scripts (``.venv/bin``) first on the PATH, and
writes ``bench/results/walkthrough.json``: the inputs, each command's exit status, wall time,
first and last lines of output (and the last of its errors), and step 2's closing table. Reads
the Debian package ``dataset-fashion-mnist`` (offline).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results" / "walkthrough.json"
FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "boot")  # fmt: skip
TAIL_LINES = 12


def readme_commands(readme: str | None = None) -> list[str]:
    """The walk-through block's commands (of ``readme``, default the README's), continuation
    lines joined, comments dropped."""
    section = (readme or README.read_text()).split("## Distill your own model: a walk-through", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    joined = block.replace("\\\n", " ")
    return [" ".join(line.split()) for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip


def _idx(name: str):
    import numpy as np

    data = gzip.decompress((FASHION_MNIST / name).read_bytes())
    offset = 16 if "images" in name else 8
    array = np.frombuffer(data, np.uint8, offset=offset)
    return array.reshape(-1, 28, 28, 1) if "images" in name else array


def write_images(folder: pathlib.Path, per_class: int) -> int:
    """The first ``per_class`` test images of each class as PNG files, one folder per class."""
    import numpy as np
    import tensorflow as tf

    images, labels = _idx("t10k-images-idx3-ubyte.gz"), _idx("t10k-labels-idx1-ubyte.gz")
    for k, name in enumerate(CLASSES):
        target = folder / f"{k}_{name}"
        target.mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(labels == k)[:per_class]):
            png = tf.io.encode_png(images[index]).numpy()
            (target / f"{i:04d}.png").write_bytes(png)
    return per_class * len(CLASSES)


def _cnn(widths, name: str, prefix: str):
    import keras

    inputs = keras.Input((28, 28, 1), name="images")
    h = inputs
    for block, width in enumerate(widths, 1):
        h = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                name=f"{prefix}{block}_conv")(h)  # fmt: skip
        h = keras.layers.BatchNormalization(momentum=0.9, name=f"{prefix}{block}_bn")(h)
        h = keras.layers.ReLU(name=f"{prefix}{block}_relu")(h)
        if block < len(widths):
            h = keras.layers.MaxPooling2D(2, name=f"{prefix}_pool{block}")(h)
    h = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_gap")(h)
    return keras.Model(inputs, keras.layers.Dense(10, name=f"{prefix}_logits")(h), name=name)


def make_models(folder: pathlib.Path, teacher_epochs: int, train_images: int) -> dict:
    """A teacher trained on Fashion-MNIST training images, and an untrained student."""
    import keras

    keras.utils.set_random_seed(0)
    x, y = _idx("train-images-idx3-ubyte.gz")[:train_images], _idx("train-labels-idx1-ubyte.gz")
    # Trained on what a run feeds it: a folder's pixels scaled to [0, 1].
    teacher = _cnn((32, 64, 128), "my_teacher", "t")
    teacher.compile(keras.optimizers.Adam(1e-3),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])  # fmt: skip
    start = time.perf_counter()
    history = teacher.fit(x / 255.0, y[:train_images], batch_size=128, epochs=teacher_epochs,
                          verbose=2)  # fmt: skip
    teacher.save(folder / "teacher.keras")
    student = _cnn((16, 32, 32, 48), "my_student", "s")
    student.save(folder / "student.keras")
    return {"teacher_params": teacher.count_params(), "student_params": student.count_params(),
            "teacher_train_images": train_images, "teacher_epochs": teacher_epochs,
            "teacher_train_accuracy": round(float(history.history["accuracy"][-1]), 4),
            "teacher_train_s": round(time.perf_counter() - start, 1)}  # fmt: skip


def run_commands(folder: pathlib.Path, commands: list[str]) -> list[dict]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = []
    for command in commands:
        start = time.perf_counter()
        proc = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True,
                              text=True)  # fmt: skip
        seconds = round(time.perf_counter() - start, 1)
        print(f"[{proc.returncode}] {seconds:7.1f} s  {command}", flush=True)
        done.append({"command": command, "exit_status": proc.returncode, "seconds": seconds,
                     "stdout": proc.stdout, "head": proc.stdout.splitlines()[:TAIL_LINES],
                     "tail": proc.stdout.splitlines()[-TAIL_LINES:],
                     "stderr_tail": proc.stderr.splitlines()[-TAIL_LINES:]})  # fmt: skip
    return done


def closing_table(stdout: str) -> list[str]:
    """Step 2's closing table: from its header line to the first blank line after it."""
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("model ")), None)
    if start is None:
        return []
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per_class", type=int, default=300, help="Images per class folder.")
    parser.add_argument("--teacher_epochs", type=int, default=5)
    parser.add_argument("--teacher_images", type=int, default=30000,
                        help="Fashion-MNIST training images the teacher learns from.")
    parser.add_argument("--workdir", help="A new folder (default: a temporary one).")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    folder = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="fitnets_walkthrough_"))
    if args.workdir:
        folder.mkdir(parents=True)  # refuses an existing folder: nothing of a user's is touched
    started = datetime.datetime.now(datetime.timezone.utc)
    images = write_images(folder / "images", args.per_class)
    inputs = {"images": images, "per_class": args.per_class,
              **make_models(folder, args.teacher_epochs, args.teacher_images)}  # fmt: skip
    steps = run_commands(folder, readme_commands())
    train = next((s for s in steps if "--workdir=runs/mine " in s["command"] + " "), None)
    result = {
        "date": started.isoformat(timespec="seconds"), "folder": str(folder),
        "load_average": os.getloadavg(), "cpus": os.cpu_count(), "inputs": inputs,
        "closing_table": closing_table(train["stdout"]) if train else [],
        "steps": [{k: v for k, v in s.items() if k != "stdout"} for s in steps],
    }  # fmt: skip
    pathlib.Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.results).write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(result["closing_table"]))
    print(f"wrote {args.results}")
    return max(s["exit_status"] for s in steps)


if __name__ == "__main__":
    sys.exit(main())
