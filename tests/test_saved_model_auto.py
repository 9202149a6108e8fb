"""hints='auto' for a SavedModel teacher: the paper's rule over the tensors ending the blocks of
its signature's graph (fitnets_tf.models.saved_model_features, graph_blocks)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, tiny_model, train_cli

from fitnets_tf import Distiller, errors, hint_choice, hint_path
from fitnets_tf import config as config_lib
from fitnets_tf.models import saved_model, saved_model_features, saved_model_hints

# tiny_model's names in a trace after its first call (Keras adds "_1" to each scope).
POOL1, BN = "teacher_1/pool1_1/MaxPool2d", "teacher_1/bn_1/batchnorm/add_1"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """tiny_model's teacher and its folder (Keras' export)."""
    folder = tmp_path_factory.mktemp("saved_model_auto")
    model = tiny_model("teacher", width=4, seed=0)
    model.export(folder / "teacher")
    return model, folder / "teacher"


def _residual() -> keras.Model:
    """8×8×1 → conv "stem" → a residual block (conv, conv, added to stem's, ReLU, max pool) →
    conv "head" → global average pool → logits."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    stem = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(stem)
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(h)
    h = keras.layers.ReLU(name="relu")(keras.layers.Add(name="sum")([stem, h]))
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="head")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h), name="res")


def test_a_keras_teacher_and_its_saved_model_choose_alike(exported):
    teacher, folder = exported
    student = tiny_model("student", width=2, seed=1)
    keras_choice = hint_choice.auto_pair(teacher, student)
    graph_choice = hint_choice.auto_pair(saved_model.load(folder), student)
    assert (keras_choice.hint_layer, keras_choice.guided_layer) == ("pool1", "bn")
    assert (graph_choice.hint_layer, graph_choice.guided_layer) == (POOL1, "bn")
    # The same clauses, the teacher's layers named by their tensors (its folder's name is the
    # model's).
    expected = (keras_choice.reason.replace("'pool1' (4, 4, 4)", f"'{POOL1}' (4, 4, 4)")
                .replace("'bn' (4, 4, 4)", f"'{BN}' (4, 4, 4)"))  # fmt: skip
    assert graph_choice.reason == expected


def test_a_residual_block_s_sum_is_inside_its_block(tmp_path):
    # The stem's ReLU feeds the sum around conv1 and conv2: none of their tensors ends a block;
    # the sum, in conv2's block, is followed by its ReLU and the pool, which ends it. The global
    # mean is a vector, so the head's ReLU ends the last block, as the Keras layers do.
    model = _residual()
    model.export(tmp_path / "res")
    assert [layer.name for layer in hint_choice.feature_layers(model)] == ["stem", "pool", "head"]
    found = saved_model_features.of_teacher(saved_model.load(tmp_path / "res"))
    assert [(c.tensor, c.shape, c.op) for c in found] == [
        ("res_1/stem_1/Relu", (8, 8, 4), "Relu"), ("res_1/pool_1/MaxPool2d", (4, 4, 4), "MaxPool"),
        ("res_1/head_1/Relu", (4, 4, 6), "Relu"),
    ]  # fmt: skip


def test_a_global_mean_kept_as_a_map_is_a_pooled_vector(tmp_path):
    # tf.reduce_mean(keepdims=True) over H and W gives (N, 1, 1, C): no block's output. A
    # maxout's Max over its pieces (tiny_model's conv layers) is a map, and stays one.
    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(tf.random.stateless_normal((3, 3, 1, 2), seed=(1, 2)))
            self.dense = tf.Variable(tf.random.stateless_normal((2, 3), seed=(3, 4)))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
        def __call__(self, images):
            hidden = tf.nn.relu(tf.nn.conv2d(images, self.kernel, 1, "SAME"), name="hidden")
            pooled = tf.reduce_mean(hidden, axis=[1, 2], keepdims=True, name="pooled")
            return tf.reshape(pooled, [-1, 2]) @ self.dense

    module = Module()
    tf.saved_model.save(module, str(tmp_path / "module"), signatures=module.__call__)
    teacher = saved_model.load(tmp_path / "module")
    listed = [row[0] for row in saved_model_hints.describe(saved_model.signature_of(teacher),
                                                           (8, 8, 1))]  # fmt: skip
    assert "pooled" in listed  # a 4-D tensor, which can be named by hand
    assert [c.tensor for c in saved_model_features.of_teacher(teacher)] == ["hidden"]


def test_the_distiller_loads_the_chosen_tensor_and_stage_one_trains_on_it(exported):
    _, folder = exported
    student = tiny_model("student", width=2, seed=1)
    given = saved_model.load(folder, (8, 8, 1))
    distiller = Distiller(given, student, hints="auto")
    assert distiller.auto_pair.hint_layer == POOL1
    assert distiller.hints == [("teacher_1.pool1_1.MaxPool2d", "bn")]
    assert distiller.teacher.get_layer("saved_model").hints == [POOL1]
    # The folder is not loaded twice: the teacher fetching the hint runs on the given one's
    # signature and variables.
    assert distiller.teacher.get_layer("saved_model").signature is given.get_layer("saved_model")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(32, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 32)
    teacher, _ = exported
    np.testing.assert_allclose(
        hint_path.tap(distiller.teacher, ["teacher_1.pool1_1.MaxPool2d"], "hint")(x),
        keras.Model(teacher.inputs, teacher.get_layer("pool1").output)(x), atol=1e-6)  # fmt: skip
    distiller.compile(optimizer=keras.optimizers.SGD(0.05), phase="hints")
    first = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["hint_loss"]
    distiller.fit(x, y, batch_size=32, epochs=5, shuffle=False, verbose=0)
    last = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["hint_loss"]
    assert np.isfinite(last) and last < 0.9 * first


def test_images_of_any_size_need_theirs_for_auto(tmp_path):
    # Their maps have no shape to compare with the student's: "the teacher has no feature
    # maps" would have sent the user to --list_layers.
    inputs = keras.Input((None, None, 1))
    h = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    keras.Model(inputs, outputs, name="open").export(tmp_path / "open")
    student = tiny_model("student", width=2, seed=1)
    with pytest.raises(errors.ConfigError, match=r"The teacher SavedModel 'open' takes images of "
                       r"any size \(None, None, 1\), and hints='auto' compares its maps' shapes "
                       r"with the student's: give their size, load\(path, "
                       r"input_shape=\(H, W, C\)\)\."):  # fmt: skip
        Distiller(saved_model.load(tmp_path / "open"), student, hints="auto")
    described = hint_choice.describe_models(saved_model.load(tmp_path / "open"), student)
    assert "hints=auto cannot choose a pair: The teacher SavedModel 'open' takes images" in described
    found = saved_model_features.of_teacher(saved_model.load(tmp_path / "open", (8, 8, 1)))
    assert [(c.tensor, c.shape) for c in found] == [("open_1/conv_1/BiasAdd", (6, 6, 2))]


def test_hints_auto_for_a_saved_model_teacher_in_the_config(exported):
    _, folder = exported
    config = config_lib.ExperimentConfig().with_values(
        dataset="synthetic", student="mnist_fitnet", teacher_path=str(folder),
        modes=("fitnet",), limit=128, hints=("auto",),
    )  # fmt: skip
    config.validate()  # accepted: the run chooses once it has built the student
    assert config.hint_pairs() == "auto"


# The CLI's runs: 28x28 images of 10 classes, synthetic's, and the smoke config's student.
@pytest.fixture(scope="module")
def mnist_sized(tmp_path_factory):
    """conv (stride 2) → max pool → conv_b → conv_c (each with its ReLU) → global mean →
    logits."""
    path = tmp_path_factory.mktemp("saved_model_auto_cli") / "teacher"
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv")(inputs)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_c")(h)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
    keras.Model(inputs, outputs, name="net").export(path)
    return path


SMOKE_FLAGS = (f"--flagfile={ROOT}/configs/smoke.flags", "--teacher_epochs=0", "--limit=128")
HINT = "net_1/conv_b_1/Relu"


def test_list_layers_stars_the_blocks_and_shows_the_auto_choice(mnist_sized):
    done = train_cli(*SMOKE_FLAGS, f"--teacher_path={mnist_sized}", "--mode=fitnet",
                     "--hints=auto", "--list_layers")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    starred = [line.split()[1] for line in done.stdout.splitlines()
               if line.startswith("*") and "net_1/" in line]  # fmt: skip
    assert starred == ["net_1/pool_1/MaxPool2d", HINT, "net_1/conv_c_1/Relu"]
    assert f"hints=auto chooses {HINT}:" in done.stdout
    assert f"'{HINT}' (7, 7, 6) is feature layer 2 of 3 of 'teacher', its middle" in done.stdout


def test_the_cli_trains_fitnet_from_the_auto_choice_of_a_saved_model_teacher(mnist_sized,
                                                                             tmp_path):  # fmt: skip
    done = train_cli(*SMOKE_FLAGS, f"--teacher_path={mnist_sized}", "--mode=fitnet",
                     "--hints=auto", "--hints_epochs=1", "--kd_epochs=1",
                     "--measure_latency=false", f"--workdir={tmp_path / 'run'}", timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"hints=auto: {HINT}:" in done.stdout
    hints = json.loads((tmp_path / "run" / "hints.json").read_text())
    assert hints["auto"]["hint_layer"] == HINT
    assert hints["pairs"][0]["hint_layer"] == "net_1.conv_b_1.Relu"
    assert hints["pairs"][0]["guided_layer"] == hints["auto"]["guided_layer"]


def test_a_search_trial_with_auto_hints_loads_the_chosen_tensor(exported):
    import keras_tuner  # noqa: PLC0415  (the search's)

    from fitnets_tf import search  # noqa: PLC0415

    _, folder = exported
    model = search.FitNetsHyperModel(folder, lambda: tiny_model("student", width=2, seed=1),
                                     hints="auto", hints_epochs=1)  # fmt: skip
    hp = keras_tuner.HyperParameters()
    model.declare_hyperparameters(hp)
    distiller = model.build(hp)
    assert distiller.hints == [("teacher_1.pool1_1.MaxPool2d", "bn")]
    assert distiller.teacher.get_layer("saved_model").hints == [POOL1]
