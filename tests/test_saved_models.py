"""A model file fitnets_tf writes (``fitnets_tf.run.io.save_model``) holds the model's
architecture and weights, never an optimizer: the same in every mode of a run."""

import io
import json
import zipfile

import h5py
import keras
import numpy as np
import tensorflow as tf
from conftest import tiny_dataset, tiny_model

from fitnets_tf import config as config_lib
from fitnets_tf import experiment
from fitnets_tf.run import io as run_io
from fitnets_tf.run.layout import RunLayout


def _contents(path):
    """A ``.keras`` file's config and its weights file's arrays, by their paths in it."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
        arrays = {}
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
            weights.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                               if isinstance(item, h5py.Dataset) else None)  # fmt: skip
    return config, arrays


def _compile_and_fit(model, x, y=None):
    model.compile(optimizer=keras.optimizers.RMSprop(1e-2), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    model.fit(x, y, epochs=1, shuffle=False, verbose=0)


def test_a_trained_compiled_model_is_saved_as_its_architecture_and_weights_alone(tmp_path):
    model = tiny_model("student", width=4, seed=1)  # maxout: its own order in files; BN
    run_io.save_model(model, tmp_path / "untrained.keras")  # not compiled yet
    _compile_and_fit(model, tiny_dataset())  # 4 steps
    run_io.save_model(model, tmp_path / "trained.keras")

    config, arrays = _contents(tmp_path / "trained.keras")
    untrained_config, untrained = _contents(tmp_path / "untrained.keras")
    assert not [name for name in arrays if name.startswith("optimizer")]
    assert config == untrained_config and config["compile_config"] == {}
    assert {n: a.shape for n, a in arrays.items()} == {n: a.shape for n, a in untrained.items()}
    size = (tmp_path / "trained.keras").stat().st_size
    assert size == (tmp_path / "untrained.keras").stat().st_size
    assert run_io.checksum_problem(tmp_path / "trained.keras") is None  # its sha256 beside it

    loaded = keras.saving.load_model(tmp_path / "trained.keras")  # compile=True, Keras' default
    assert not loaded.compiled and getattr(loaded, "optimizer", None) is None
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # The model given is left as it was: compiled, its optimizer 4 steps on.
    assert model.compiled and int(model.optimizer.iterations) == 4


@keras.saving.register_keras_serializable(package="fitnets_test_saved_models")
class NormalizedNet(keras.Model):
    """A subclassed student of the user's (as --custom_modules registers one), holding state
    no initializer draws (an adapted Normalization) and a dropout."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.Normalization(name="norm")
        self.conv = keras.layers.Conv2D(3, 3, name="conv")
        self.drop = keras.layers.Dropout(0.5, name="drop")
        self.gap = keras.layers.GlobalAveragePooling2D(name="gap")
        self.logits = keras.layers.Dense(3, name="logits")

    def call(self, x, training=False):
        return self.logits(self.drop(self.gap(self.conv(self.norm(x))), training=training))


def test_a_compiled_subclassed_model_is_saved_without_its_optimizer_and_computes_the_same(
    tmp_path,
):
    rng = np.random.RandomState(0)
    x = (rng.rand(16, 8, 8, 1) * 255).astype("float32")
    y = np.arange(16) % 3
    keras.utils.set_random_seed(0)
    model = NormalizedNet(name="normalized")
    model.norm.adapt(x)
    model(x[:1])
    _compile_and_fit(model, x, y)
    run_io.save_model(model, tmp_path / "student.keras")

    config, arrays = _contents(tmp_path / "student.keras")
    assert config["compile_config"] == {}
    assert not [name for name in arrays if name.startswith("optimizer")]
    loaded = run_io.load_model(tmp_path / "student.keras", "student")
    assert type(loaded) is NormalizedNet and not loaded.compiled
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_every_mode_saves_the_same_kind_of_student_file(tmp_path):
    # scratch compiles and fits the student itself; kd trains it inside a Distiller.
    config = config_lib.ExperimentConfig().with_values(
        dataset="synthetic", teacher="mnist_teacher", student="mnist_fitnet", init="he_uniform",
        modes=("scratch", "kd"), teacher_epochs=1, kd_epochs=1, batch_size=64, limit=128,
        measure_latency=False, learning_rate=1e-3,
    )  # fmt: skip
    summary = experiment.run(config, tmp_path, log=lambda m: None)
    files = list(tmp_path.rglob("*.keras"))
    # student.keras (scratch's, the first mode's), each mode's and stage's, the teacher's, the
    # preprocessor's.
    assert len(files) == 7
    for path in files:
        config, arrays = _contents(path)
        assert config["compile_config"] == {}, path
        assert not [name for name in arrays if name.startswith("optimizer")], path
    sizes = {row["name"]: row["keras_file_bytes"] for row in summary["models"]}
    assert sizes["scratch"] == sizes["kd"]  # one architecture, one size
    layout = RunLayout(tmp_path)
    assert sizes["scratch"] == layout.student.stat().st_size
    # The SavedModel beside student.keras never held one: the student's variables, listed twice.
    saved = tf.train.list_variables(str(layout.student_saved_model / "variables" / "variables"))
    names = [name for name, _ in saved if name != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert {name.split("/")[0] for name in names} == {"_all_variables", "variables"}
    assert len(names) == 2 * len(keras.saving.load_model(layout.student).variables)
