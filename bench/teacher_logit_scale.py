"""How far apart a teacher's top two logits are fed as trained and fed the other way.

``python -m bench.teacher_logit_scale`` (about 2 minutes on 2 busy cores) writes
``results/teacher_logit_scale.json``; the README's paragraph on ``Distiller.fit``'s logit-scale
check quotes it. Eight small teachers (a CNN and an MLP, with and without BatchNormalization,
trained on pixels / 255 or on raw pixels) are trained here on the first ``--train_images``
Fashion-MNIST training images (read offline through :func:`fitnets_tf.data.load`) for
``--epochs`` epochs, then fed the first 512 test images as trained and the other way (raw
pixels for pixels / 255, pixels / 255 for raw). For each: accuracy, the median gap between the
top two logits (and the ratio of the two gaps), and whether ``Distiller.fit``'s check warns of
it (one step of ``fit`` on those images; its note read from stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import pathlib

import keras
import numpy as np

import fitnets_tf
from bench.run import machine
from fitnets_tf import data
from fitnets_tf.errors import ConfigError
from fitnets_tf.run.io import write_json

RESULTS = pathlib.Path(__file__).parent / "results" / "teacher_logit_scale.json"
TEST_IMAGES = 512
# Words of logit_scale's warnings: logits 255 times too far apart, or too close.
SAID = {"near one-hot": "warned: near one-hot", "near uniform": "warned: near uniform"}


def _cnn(batch_norm: bool) -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    h = inputs
    for filters in (16, 32):
        h = keras.layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm)(h)
        if batch_norm:
            h = keras.layers.BatchNormalization()(h)
        h = keras.layers.MaxPooling2D()(keras.layers.ReLU()(h))
    h = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(h))
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def _mlp(batch_norm: bool) -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Flatten()(inputs)
    for units in (256, 128):
        h = keras.layers.Dense(units, use_bias=not batch_norm)(h)
        if batch_norm:
            h = keras.layers.BatchNormalization()(h)
        h = keras.layers.ReLU()(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def _arrays(split, count: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*((np.asarray(x), np.asarray(y)) for x, y in split), strict=True)
    return np.concatenate(xs)[:count].astype("float32"), np.concatenate(ys)[:count]


def _stats(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> dict:
    logits = model.predict(images, batch_size=128, verbose=0).astype("float64")
    top = np.sort(logits, axis=-1)[:, -2:]
    return {"accuracy": round(float(np.mean(logits.argmax(-1) == labels)), 4),
            "median_top_gap": round(float(np.median(top[:, 1] - top[:, 0])), 3)}  # fmt: skip


def _fit_says(teacher: keras.Model, images: np.ndarray, labels: np.ndarray) -> str:
    """What one step of ``Distiller.fit`` on ``images`` says of ``teacher``."""
    student = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(10)])  # fmt: skip
    distiller = fitnets_tf.Distiller(teacher, student)
    distiller.compile("sgd", phase="kd")
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            distiller.fit(images, labels, batch_size=64, epochs=1, steps_per_epoch=1, verbose=0)
    except ConfigError:
        return "refused"
    found = [told for words, told in SAID.items() if words in said.getvalue()]
    return found[0] if found else "noted" if said.getvalue().strip() else "silent"


def measure(train_images: int, epochs: int) -> dict:
    datasets = data.load("fashion_mnist", preprocessing="none", validation_size=0,
                         limit=train_images, batch_size=256)  # fmt: skip
    x_train, y_train = _arrays(datasets.train, train_images)
    x_test, y_test = _arrays(datasets.test, TEST_IMAGES)
    out = {}
    for kind, build in (("cnn", _cnn), ("mlp", _mlp)):
        for batch_norm in (False, True):
            for trained_on, scale in (("/255", 1 / 255), ("raw", 1.0)):
                keras.utils.set_random_seed(0)
                teacher = build(batch_norm)
                # Raw pixels need a smaller step to train at all.
                teacher.compile(keras.optimizers.Adam(1e-3 if scale != 1.0 else 1e-4),
                                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
                teacher.fit(x_train * scale, y_train, batch_size=128, epochs=epochs, verbose=0)
                other = x_test if scale != 1.0 else x_test / 255
                name = f"{kind}{'_bn' if batch_norm else ''}_{trained_on}"
                out[name] = {
                    "fed_as_trained": {**_stats(teacher, x_test * scale, y_test),
                                       "fit": _fit_says(teacher, x_test * scale, y_test)},
                    "fed_other_way": {**_stats(teacher, other, y_test),
                                      "fit": _fit_says(teacher, other, y_test)},
                }  # fmt: skip
                out[name]["gap_other_way_over_as_trained"] = round(
                    out[name]["fed_other_way"]["median_top_gap"]
                    / out[name]["fed_as_trained"]["median_top_gap"], 4)
                print(name, json.dumps(out[name]), flush=True)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_images", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    result = {"machine": machine(), "date": datetime.datetime.now(datetime.UTC).isoformat(),
              "keras": keras.__version__, "train_images": args.train_images,
              "epochs": args.epochs, "test_images": TEST_IMAGES,
              "teachers": measure(args.train_images, args.epochs)}  # fmt: skip
    result["machine"]["load_average_end"] = os.getloadavg()
    write_json(RESULTS, result)
    print(json.dumps(result["teachers"], indent=1))


if __name__ == "__main__":
    main()
