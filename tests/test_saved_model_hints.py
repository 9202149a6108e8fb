"""Hints from a SavedModel teacher's tensors (fitnets_tf.models.saved_model_hints)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_data, tiny_model

from fitnets_tf import Distiller, errors, hint_path, teacher_cache
from fitnets_tf import config as config_lib
from fitnets_tf.models import onnx_hints, saved_model, saved_model_hints

# tiny_model's names in a trace after its first call (Keras adds "_1" to each scope).
POOL1, BN = "teacher_1/pool1_1/MaxPool2d", "teacher_1/bn_1/batchnorm/add_1"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """tiny_model's teacher, and its folders: Keras' export, and tf.saved_model.save's."""
    folder = tmp_path_factory.mktemp("saved_model_hints")
    model = tiny_model("teacher", width=4, seed=0)
    model.export(folder / "export")
    tf.saved_model.save(model, str(folder / "saved"))
    return model, folder


class _Module(tf.Module):
    """A tf.Module's SavedModel: a conv, a ReLU named "hidden", a copy of it named "features",
    and one more ReLU inside a tf.cond branch (a function of its own in the graph)."""

    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal((3, 3, 1, 2), seed=(1, 2)))
        self.dense = tf.Variable(tf.random.stateless_normal((2, 3), seed=(3, 4)))

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
    def __call__(self, images):
        hidden = tf.nn.relu(tf.nn.conv2d(images, self.kernel, 1, "SAME"), name="hidden")
        hidden = tf.identity(hidden, name="features")
        hidden = tf.cond(tf.reduce_sum(images) > 0.0, lambda: tf.nn.relu(hidden, name="inside"),
                         lambda: hidden)  # fmt: skip
        return tf.reduce_mean(hidden, axis=[1, 2]) @ self.dense


def test_a_hint_is_the_keras_layer_output_of_the_model_saved(exported):
    model, folder = exported
    x, _ = tiny_data(5)
    for kind in ("export", "saved"):
        teacher = saved_model.load(folder / kind, hints=[POOL1, BN])
        for tensor, layer in ((POOL1, "pool1"), (BN, "bn")):
            tapped = hint_path.tap(teacher, [onnx_hints.layer_name(tensor)], "hint")
            expected = keras.Model(model.inputs, model.get_layer(layer).output)(x)
            assert tapped.output.shape[1:] == (4, 4, 4)
            np.testing.assert_allclose(tapped(x), expected, atol=1e-6)
        np.testing.assert_allclose(teacher(x), model(x), atol=1e-6)  # the logits: as without
    listed = [row[0] for row in saved_model_hints.describe(
        saved_model.signature_of(teacher), (8, 8, 1))]  # fmt: skip
    assert listed[:6] == ["teacher_1/conv1_1/convolution", "teacher_1/conv1_1/BiasAdd",
                          "teacher_1/conv1_1/Max", "teacher_1/conv1_1/IdentityN",
                          "teacher_1/conv1_1/IdentityN:1", POOL1]  # fmt: skip
    assert listed[-1] == BN and len(listed) == 13


def test_a_tf_module_gives_its_named_tensors(tmp_path):
    module = _Module()
    tf.saved_model.save(module, str(tmp_path / "module"), signatures=module.__call__)
    x, _ = tiny_data(3)
    teacher = saved_model.load(tmp_path / "module", hints=["hidden", "features"])
    expected = tf.nn.relu(tf.nn.conv2d(x, module.kernel, 1, "SAME"))
    for name in ("hidden", "features"):  # a copy is not listed, but taken when named
        np.testing.assert_allclose(hint_path.tap(teacher, [name], "hint")(x), expected, atol=1e-6)
    listed = saved_model_hints.describe(saved_model.signature_of(teacher), (8, 8, 1))
    # The tf.cond's output is the body's (its branches' tensors are not).
    assert listed == [("Conv2D", "Conv2D", (8, 8, 2)), ("hidden", "Relu", (8, 8, 2)),
                      ("cond", "StatelessIf", (8, 8, 2))]  # fmt: skip
    np.testing.assert_allclose(teacher(x), module(x), atol=1e-6)
    with pytest.raises(
        errors.ConfigError,
        match=r"'cond/inside' lies inside the function "
        r"'.*cond.*true.*', which the graph calls \(a tf.while_loop or tf.cond "
        r"body.*save the teacher as a .keras file",
    ):
        saved_model.load(tmp_path / "module", hints=["cond/inside"])


def test_a_stage_one_step_from_a_saved_model_hint_trains_the_student(exported):
    model, folder = exported
    teacher = saved_model.load(folder / "export", hints=[BN])
    student = tiny_model("student", width=2, seed=1)
    distiller = Distiller(teacher, student, hints=[(BN, "conv2")])
    assert distiller.hints == [("teacher_1.bn_1.batchnorm.add_1", "conv2")]
    distiller.compile(optimizer=keras.optimizers.SGD(0.05), phase="hints")
    x, y = tiny_data(32)
    before, weights = student.get_weights(), teacher.get_weights()
    first = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["hint_loss"]
    distiller.fit(x, y, batch_size=32, epochs=5, shuffle=False, verbose=0)
    last = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["hint_loss"]
    assert last < 0.9 * first
    assert not np.allclose(student.get_weights()[0], before[0])
    for kept, now in zip(weights, teacher.get_weights(), strict=True):  # the teacher: frozen
        np.testing.assert_array_equal(kept, now)
    # The teacher cache's hints are the live ones.
    cached = teacher_cache.outputs_function(teacher, "teacher_1.bn_1.batchnorm.add_1")(x)
    np.testing.assert_allclose(cached[teacher_cache.CACHED_HINT],
                               keras.Model(model.inputs, model.get_layer("bn").output)(x),
                               atol=1e-6)  # fmt: skip


def test_bad_hint_tensors_are_refused_naming_close_ones(exported):
    _, folder = exported
    with pytest.raises(
        errors.ConfigError,
        match=r"no tensor 'teacher_1/pool1_1/MaxPool2D' "
        r"in the graph \(did you mean 'teacher_1/pool1_1/MaxPool2d'.*--list_layers",
    ):
        saved_model.load(folder / "export", hints=["teacher_1/pool1_1/MaxPool2D"])
    with pytest.raises(
        errors.ConfigError,
        match=r"'teacher_1/gap_1/Mean' is not a 4-D "
        r"activation \(its shape: \(N, 4\)\)",
    ):
        saved_model.load(folder / "export", hints=["teacher_1/gap_1/Mean"])
    with pytest.raises(
        errors.ConfigError,
        match=r"is not a 4-D activation \(a weight of the "
        r"SavedModel\)",
    ):
        saved_model.load(folder / "export", hints=["teacher_1/conv1_1/convolution/ReadVariableOp"])
    teacher = saved_model.load(folder / "export", hints=[POOL1])
    student = tiny_model("student", width=2, seed=1)
    with pytest.raises(
        errors.ConfigError,
        match=r"The SavedModel teacher 'export' was loaded "
        r"without the hint tensor 'teacher_1/bn_1/batchnorm/add_1'",
    ):
        Distiller(teacher, student, hints=[(BN, "conv2")])
    with pytest.raises(
        errors.ConfigError,
        match=r"'export' is a TensorFlow SavedModel, run as a "
        r"function, loaded without hints.*saved_model.load\(path, input_shape, "
        r"hints=\[...\]\)",
    ):
        Distiller(saved_model.load(folder / "export"), student, hints=[(POOL1, "conv2")])


def test_hints_from_a_saved_model_teacher_in_the_config(exported):
    _, folder = exported
    smoke = config_lib.ExperimentConfig().with_values(
        dataset="synthetic", student="mnist_fitnet", teacher_path=str(folder / "export"),
        modes=("fitnet",), limit=128,
    )  # fmt: skip
    smoke.with_values(hints=(f"{POOL1}:conv2",)).validate()  # accepted as it is
    with pytest.raises(
        errors.ConfigError,
        match=r"is a TensorFlow SavedModel, whose hints are "
        r"tensors of its graph, and --mode fitnet trains from hints: give --hints=auto",
    ):
        smoke.validate()
    smoke.with_values(hints=("auto",)).validate()  # chosen once the run has built its student
    assert smoke.hint_pairs() == []  # the paper's pairs are layers, not tensors of its graph


def test_images_of_any_size_need_theirs_for_hints(tmp_path):
    inputs = keras.Input((None, None, 1))
    h = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    keras.Model(inputs, outputs, name="open").export(tmp_path / "open")
    with pytest.raises(
        errors.ConfigError,
        match=r"takes images of any size \(None, None, 1\) "
        r"and has hints: give their size",
    ):
        saved_model.load(tmp_path / "open", hints=["open_1/conv_1/convolution"])
    teacher = saved_model.load(tmp_path / "open", (6, 6, 1), hints=["open_1/conv_1/convolution"])
    assert teacher.get_layer("open_1.conv_1.convolution").output.shape == (None, 4, 4, 2)
