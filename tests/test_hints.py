"""Several hint pairs, and the paper's rule for choosing one (hints="auto")."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_dataset, tiny_model

import fitnets_tf
from fitnets_tf import hint_choice, models
from fitnets_tf.errors import ConfigError, HintShapeError


def _scaling_net(name: str, first: float, second: float) -> keras.Model:
    """2×2×1 → ×first (layer a) → ×second (layer b) → logits: every value known by hand."""
    inputs = keras.Input((2, 2, 1))
    a = keras.layers.Conv2D(1, 1, use_bias=False, name="a")(inputs)
    b = keras.layers.Conv2D(1, 1, use_bias=False, name="b")(a)
    logits = keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(b))
    model = keras.Model(inputs, logits, name=name)
    model.get_layer("a").kernel.assign([[[[first]]]])
    model.get_layer("b").kernel.assign([[[[second]]]])
    return model


def _identity_regressor() -> keras.layers.Layer:
    layer = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones")
    layer.build((None, 2, 2, 1))
    return layer


X = np.array([[[[1.0], [2.0]], [[3.0], [4.0]]]], "float32")  # Σx² = 30


def _two_pair_distiller(**kwargs):
    teacher = _scaling_net("teacher", 2.0, 3.0)  # a = 2x, b = 6x
    student = _scaling_net("student", 1.0, 1.0)  # a = x, b = x
    return fitnets_tf.Distiller(
        teacher, student, hints=[("a", "a"), ("b", "b")], hint_weights=(1.0, 0.5),
        regressor=[_identity_regressor(), _identity_regressor()], **kwargs,
    )  # fmt: skip


def test_two_pairs_sum_their_weighted_hint_losses():
    d = _two_pair_distiller()
    d.compile(optimizer="sgd", phase="hints")
    logs = d.evaluate(X, return_dict=True, verbose=0)
    # a: ½·Σ(2x − x)² = ½·30 = 15;  b: ½·Σ(6x − x)² = ½·25·30 = 375;  total 15 + 0.5·375.
    assert logs["hint_loss/a:a"] == pytest.approx(15.0)
    assert logs["hint_loss/b:b"] == pytest.approx(375.0)
    assert logs["hint_loss"] == pytest.approx(202.5) and logs["loss"] == pytest.approx(202.5)


def test_cached_hints_give_the_same_losses_as_the_live_teacher():
    d = _two_pair_distiller()
    d.compile(optimizer="sgd", phase="hints")
    cached = {"images": X, "teacher_hint": (2.0 * X, 6.0 * X)}
    logs = d.evaluate(tf.data.Dataset.from_tensors(cached), return_dict=True, verbose=0)
    assert logs["hint_loss"] == pytest.approx(202.5)


def test_stage_one_trains_the_student_up_to_its_deepest_guided_layer_and_every_regressor():
    teacher, student = tiny_model("t", 6, 0, pieces=3), tiny_model("s", 4, 1)
    d = fitnets_tf.Distiller(teacher, student, hints=[("pool1", "pool1"), ("conv2", "conv2")])
    assert len(d.regressors) == 2 and d.hint_layer == "pool1" and d.guided_layer == "pool1"
    frozen = [np.array(v) for v in student.get_layer("logits").weights]
    before = [np.array(v) for r in d.regressors for v in r.weights]
    d.compile(optimizer=keras.optimizers.SGD(0.1), phase="hints")
    d.fit(tiny_dataset(), epochs=1, verbose=0)
    after = [np.array(v) for r in d.regressors for v in r.weights]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(
        np.array_equal(a, np.array(b))
        for a, b in zip(frozen, student.get_layer("logits").weights, strict=True)
    )
    assert set(d.get_metrics_result()) == {
        "loss", "hint_loss", "hint_loss/pool1:pool1", "hint_loss/conv2:conv2"
    }  # fmt: skip


def test_an_unmatchable_pair_is_named_at_construction():
    teacher, student = tiny_model("t", 6, 0, pieces=3), tiny_model("s", 4, 1)
    with pytest.raises(HintShapeError, match=r"Pair 2 \(conv1:pool1\)"):
        fitnets_tf.Distiller(teacher, student, hints=[("pool1", "pool1"), ("conv1", "pool1")])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(hints=[("pool1", "pool1")], hint_layer="pool1"), "not both"),
        (dict(hints=[]), "non-empty list"),
        (dict(hints="pool1:pool1"), "non-empty list"),
        (dict(hints=[("pool1", "pool1")] * 2), "names a pair twice"),
        (dict(hints=[("pool1", "pool1")], hint_weights=(1.0, 2.0)), "1 number"),
        (dict(hints=[("pool1", "pool1")], hint_weights=(0.0,)), "> 0"),
    ],
)
def test_malformed_hints_are_refused(kwargs, match):
    teacher, student = tiny_model("t", 6, 0, pieces=3), tiny_model("s", 4, 1)
    with pytest.raises(ConfigError, match=match):
        fitnets_tf.Distiller(teacher, student, **kwargs)


def test_seeded_regressors_of_equal_shapes_get_distinct_draws():
    teacher, student = tiny_model("t", 4, 0), tiny_model("s", 4, 1)
    d = fitnets_tf.Distiller(
        teacher, student, hints=[("conv1", "conv1"), ("conv2", "conv2")],
        regressor_initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=7),
    )  # fmt: skip
    first, second = (np.array(r.kernel) for r in d.regressors)
    assert first.shape == second.shape and not np.array_equal(first, second)


@pytest.mark.parametrize(
    ("teacher", "student", "pair"),
    [
        ("mnist_teacher", "mnist_fitnet", ("pool2", "pool4")),  # the paper's own MNIST pair
        ("cifar_teacher", "fitnet1", ("pool2", "conv5")),
        ("resnet32x4", "resnet8x4", ("stage2_block2_out", "stage2")),
    ],
)
def test_auto_pair_is_the_middle_of_each_network(teacher, student, pair):
    shape = (28, 28, 1) if teacher.startswith("mnist") else (32, 32, 3)
    classes = 10
    chosen = hint_choice.auto_pair(
        models.build(teacher, input_shape=shape, num_classes=classes),
        models.build(student, input_shape=shape, num_classes=classes),
    )
    assert (chosen.hint_layer, chosen.guided_layer) == pair
    assert "middle" in chosen.reason and pair[0] in chosen.reason


def test_distiller_with_auto_hints_records_and_prints_its_choice(capsys):
    teacher = models.build("mnist_teacher", input_shape=(28, 28, 1), num_classes=10)
    student = models.build("mnist_fitnet", input_shape=(28, 28, 1), num_classes=10)
    d = fitnets_tf.Distiller(teacher, student, hints="auto")
    assert d.hints == [("pool2", "pool4")] and d.auto_pair.as_dict()["guided_layer"] == "pool4"
    assert "hints=auto: pool2:pool4 (the paper's rule" in capsys.readouterr().out


def test_auto_pair_refuses_a_student_too_small_for_the_hint():
    teacher = _scaling_net("teacher", 1.0, 1.0)
    inputs = keras.Input((2, 2, 1))
    small = keras.layers.Conv2D(1, 2, name="c")(inputs)  # 1×1 maps: smaller than the 2×2 hint
    small = keras.layers.Conv2D(1, 1, name="d")(small)
    student = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(small)))
    with pytest.raises(HintShapeError, match="no student layer can be mapped"):
        hint_choice.auto_pair(teacher, student)
