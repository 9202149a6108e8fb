"""Subclassed models with hints: the graph of their own layers (fitnets_tf.models.traced)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fitnets_tf
from fitnets_tf.errors import ConfigError
from fitnets_tf.models import traced


class TinyStudent(keras.Model):
    """conv → pool → conv → GAP → dropout → logits, ``training`` passed to the dropout."""

    def __init__(self, dropout=0.5, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="s_conv1")
        self.pool1 = keras.layers.MaxPooling2D(2, name="s_pool1")
        self.conv2 = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="s_conv2")
        self.gap = keras.layers.GlobalAveragePooling2D(name="s_gap")
        self.dropout = keras.layers.Dropout(dropout, name="s_dropout")
        self.logits = keras.layers.Dense(3, name="s_logits")

    def call(self, x, training=False):
        x = self.pool1(self.conv1(x))
        return self.logits(self.dropout(self.gap(self.conv2(x)), training=training))


class BranchingStudent(TinyStudent):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.noise = keras.layers.GaussianNoise(0.1, name="s_noise")

    def call(self, x, training=False):
        x = self.pool1(self.conv1(x))
        if training:  # a branch the graph of one trace would freeze
            x = self.noise(x, training=training)
        return self.logits(self.gap(self.conv2(x)))


class ScalingStudent(TinyStudent):
    def call(self, x, training=False):
        return super().call(x, training) * (0.5 if training else 1.0)  # the same layers


class TensorFlowOpsStudent(TinyStudent):
    def call(self, x, training=False):
        return self.logits(self.gap(tf.nn.relu(self.pool1(self.conv1(x)))))


def _teacher() -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="t_conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, name="t_pool1")(h)
    h = keras.layers.GlobalAveragePooling2D(name="t_gap")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="t_logits")(h), name="teacher")


def _batch(n=8):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, n)


def test_a_subclassed_students_layers_are_hints_and_training_the_graph_trains_the_model():
    keras.utils.set_random_seed(0)
    student = TinyStudent()
    distiller = fitnets_tf.Distiller(_teacher(), student, hint_layer="t_pool1",
                                     guided_layer="s_pool1")  # fmt: skip
    graph = distiller.student
    assert [layer.name for layer in graph.layers] == [
        "tiny_student_input", "s_conv1", "s_pool1", "s_conv2", "s_gap", "s_dropout", "s_logits"
    ]  # fmt: skip
    own = [student.conv1, student.pool1, student.conv2, student.gap, student.dropout,
           student.logits]  # fmt: skip
    assert all(a is b for a, b in zip(graph.layers[1:], own, strict=True))
    x, y = _batch()
    np.testing.assert_array_equal(graph(x, training=False), student(x, training=False))
    # `training` reaches the dropout at run time, as through the model.
    assert not np.allclose(graph(x, training=True), graph(x, training=False))
    before = student.conv1.kernel.numpy().copy()
    distiller.compile(keras.optimizers.SGD(0.1), phase="hints")
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not np.array_equal(student.conv1.kernel.numpy(), before)  # the user's own weights
    assert distiller.hints == [("t_pool1", "s_pool1")]


def test_without_hints_a_subclassed_student_is_used_as_given():
    student = TinyStudent()
    distiller = fitnets_tf.Distiller(_teacher(), student)
    assert distiller.student is student


@pytest.mark.parametrize("model", [BranchingStudent, ScalingStudent])
def test_a_call_branching_on_training_is_refused_with_the_fix(model):
    student = model()
    with pytest.raises(ConfigError, match=rf"The student '{student.name}' is a subclassed "
                                          rf"{model.__name__} whose call runs other layers or "
                                          r"other arithmetic with training=True"):  # fmt: skip
        fitnets_tf.Distiller(_teacher(), student, hints="auto")


def test_a_call_on_tensorflow_functions_is_refused_naming_keras_ops():
    with pytest.raises(ConfigError) as refused:
        fitnets_tf.Distiller(_teacher(), TensorFlowOpsStudent(), hints="auto")
    message = str(refused.value)
    assert "(ValueError: A KerasTensor cannot be used as input to a TensorFlow function)" in message
    assert "Use Keras layers and keras.ops in its call" in message


def test_two_subclassed_models_need_one_of_them_called_first():
    teacher, student = TinyStudent(name="wide"), TinyStudent(name="thin")
    with pytest.raises(ConfigError, match=r"call it once on a batch of your images "
                                          r"\(teacher\(images\[:1\]\)\)"):  # fmt: skip
        fitnets_tf.Distiller(teacher, student, hint_layer="s_pool1", guided_layer="s_pool1")
    teacher(_batch(1)[0])
    assert traced.built_input_shape(teacher) == (8, 8, 1)
    traced_teacher, traced_student = traced.as_graphs(teacher, student)
    assert traced_teacher.inputs[0].shape[1:] == traced_student.inputs[0].shape[1:] == (8, 8, 1)
