"""Several hint pairs, and the paper's rule for choosing one (hints="auto")."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_data, tiny_dataset, tiny_model

import fitnets_tf
from fitnets_tf import config as config_lib
from fitnets_tf import hint_choice, models, stages, teacher_cache
from fitnets_tf.errors import ConfigError, HintShapeError
from fitnets_tf.hint_flags import parse_hints


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
        (dict(hints=[("pool1", "pool1")], hint_weights=(1.0, 2.0)), "1 finite number"),
        (dict(hints=[("pool1", "pool1")], hint_weights=(0.0,)), "> 0"),
        (dict(hints=[("pool1", "pool1")], hint_weights=(float("inf"),)), "finite"),
        # Without pairs it read "must be 0 finite number(s) > 0".
        (
            dict(hint_weights=(1.0,)),
            r"weigh the hint pairs, and there are none \(KD only\): "
            r"give the pairs they weigh \(hints=\[\(hint_layer, guided_layer\), \.\.\.\]",
        ),
    ],
)
def test_malformed_hints_are_refused(kwargs, match):
    teacher, student = tiny_model("t", 6, 0, pieces=3), tiny_model("s", 4, 1)
    with pytest.raises(ConfigError, match=match):
        fitnets_tf.Distiller(teacher, student, **kwargs)


def test_numpy_hint_weights_are_numbers():
    # np.float32 weights (an array of them) were refused as not numbers.
    teacher, student = tiny_model("t", 6, 0, pieces=3), tiny_model("s", 4, 1)
    d = fitnets_tf.Distiller(teacher, student, hints=[("pool1", "pool1"), ("conv1", "conv1")],
                             hint_weights=np.array([1.0, 0.5], "float32"))  # fmt: skip
    assert d.hint_weights == (1.0, 0.5) and all(type(w) is float for w in d.hint_weights)


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
        # vgg13's two middles: stage3_relu1 (8×8) guided vgg8's pool2, off its middle pool3.
        ("vgg13", "vgg8", ("pool3", "pool3")),
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



def test_a_block_ends_before_the_padding_of_the_next_one():
    # MobileNet's layout: each strided depthwise convolution is preceded by a ZeroPadding2D.
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    h = keras.layers.ReLU(name="r1")(h)
    h = keras.layers.ZeroPadding2D(1, name="pad")(h)
    h = keras.layers.DepthwiseConv2D(3, strides=2, name="dw")(h)
    h = keras.layers.ReLU(name="r2")(h)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    assert [layer.name for layer in hint_choice.feature_layers(model)] == ["r1", "r2"]


class _ConvBlock(keras.layers.Layer):
    """A user's block as one custom layer: a convolution then a pooling."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")
        self.pool = keras.layers.MaxPooling2D()

    def call(self, x):
        return self.pool(self.conv(x))


def test_a_custom_layer_with_kernels_starts_a_block_of_its_own():
    # Two such blocks then a Conv2D: only the second was starred (both counted as one block
    # ending before the Conv2D), so --hints=auto saw 2 feature layers instead of 3 and
    # --list_layers did not offer the first block's output.
    inputs = keras.Input((16, 16, 3))
    h = _ConvBlock(4, name="blk1")(inputs)
    h = _ConvBlock(4, name="blk2")(h)
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv3")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    names = [layer.name for layer in hint_choice.feature_layers(model)]
    assert names == ["blk1", "blk2", "bn"]

def test_distiller_with_auto_hints_records_and_prints_its_choice(capsys):
    teacher = models.build("mnist_teacher", input_shape=(28, 28, 1), num_classes=10)
    student = models.build("mnist_fitnet", input_shape=(28, 28, 1), num_classes=10)
    d = fitnets_tf.Distiller(teacher, student, hints="auto")
    assert d.hints == [("pool2", "pool4")] and d.auto_pair.as_dict()["guided_layer"] == "pool4"
    assert "hints=auto: pool2:pool4 (the paper's rule" in capsys.readouterr().out


def test_auto_pair_refuses_a_student_too_small_for_the_hint():
    teacher = _scaling_net("teacher", 1.0, 1.0)
    inputs = keras.Input((2, 2, 1))
    # 2×1 maps: narrower than the 2×2 hint (a 1×1 map is a pooled vector, no feature layer).
    small = keras.layers.Conv2D(1, (1, 2), name="c")(inputs)
    small = keras.layers.Conv2D(1, 1, name="d")(small)
    student = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(small)))
    with pytest.raises(HintShapeError, match="no student layer can be mapped") as info:
        hint_choice.auto_pair(teacher, student)
    # Both ways of naming a pair: Distiller(hints="auto") and --hints=auto both get here.
    assert (
        "Name a pair instead: hints=[(teacher_layer, student_layer)] in Python, "
        "--hints=teacher_layer:student_layer on the command line"
    ) in str(info.value)


def test_auto_pair_refusal_names_a_pair_that_fits():
    # A ResNet's middle is at full resolution, larger than every map of a thin student: the
    # message names the teacher layer nearest the middle that a student layer maps onto.
    inputs = keras.Input((4, 4, 1))
    h = keras.layers.Conv2D(1, 1, name="t1")(inputs)
    h = keras.layers.Conv2D(1, 1, name="t2")(h)  # the middle: 4×4
    h = keras.layers.Conv2D(1, 3, name="t3")(h)  # 2×2
    teacher = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    inputs = keras.Input((4, 4, 1))
    h = keras.layers.Conv2D(1, 2, name="s1")(inputs)  # 3×3
    h = keras.layers.Conv2D(1, 2, name="s2")(h)  # 2×2
    student = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    with pytest.raises(HintShapeError, match=r"'t2' \(4, 4, 1\).*Name a pair instead: "
                       r"hints=\[\('t3', 's2'\)\] in Python, --hints=t3:s2 on the command line "
                       r"\(the teacher's feature layer nearest its middle"):  # fmt: skip
        hint_choice.auto_pair(teacher, student)


# -- hints from the command line: parsing, checking, caching, listing ------------------------


def test_parse_hints_reads_auto_and_pairs():
    assert parse_hints(["auto"]) == "auto"
    assert parse_hints(["pool2:pool4", "pool3:pool6"]) == [("pool2", "pool4"), ("pool3", "pool6")]
    # A pair splits at its one ':' not part of '::' (TorchScript's names of ONNX tensors).
    assert parse_hints(["onnx::Relu_23:conv2", "a:onnx::b"]) == [("onnx::Relu_23", "conv2"),
                                                                  ("a", "onnx::b")]  # fmt: skip


@pytest.mark.parametrize(
    ("items", "match"),
    [
        (["pool2"], "'teacher_layer:student_layer'"),
        (["auto", "pool2:pool4"], "received 'auto,pool2:pool4'"),
        (["pool2:pool4:x"], "received 'pool2:pool4:x'"),
        ([":pool4"], "received ':pool4'"),
        # An ONNX tensor's '::' belongs to its name: here no pair, or an ambiguous one (the
        # single ':' of tf2onnx's "name:0").
        (["onnx::Relu_23"], "an ONNX tensor's '::' is part of its name"),
        (["a::b"], "received 'a::b'"),
        (["model/relu:0:conv2"], "received 'model/relu:0:conv2'"),
        (["a:b", "a:b"], "names a pair twice"),
        ([], "received ''"),
    ],
)
def test_parse_hints_refuses_malformed_input(items, match):
    with pytest.raises(ConfigError, match=match):
        parse_hints(items)


def test_config_gives_the_pairs_and_refuses_contradictions():
    base = config_lib.ExperimentConfig()
    assert base.hint_pairs() == [("pool2", "pool4")]  # the paper's, for the MNIST pair
    assert base.with_values(hints=("auto",)).hint_pairs() == "auto"
    two = base.with_values(hints=("pool1:conv1", "pool2:pool4"), hint_weights=(1.0, 0.5))
    two.validate()
    assert two.hint_pairs() == [("pool1", "conv1"), ("pool2", "pool4")]
    for values, match in [
        (dict(hints=("auto",), guided_layer="pool4"), "not both"),
        (dict(hints=("pool1:conv1", "pool2:pool4"), hint_weights=(1.0,)), "2 pair.*1 weight"),
        (dict(hint_weights=(0.0,)), "hint_weights must be numbers > 0"),
        (dict(hints=("pool1",)), "'teacher_layer:student_layer'"),
    ]:
        with pytest.raises(ConfigError, match=match):
            base.with_values(**values).validate()


def test_stagewise_labels_trains_up_to_the_deepest_guided_layer():
    teacher, student = tiny_model("t", 6, 0, pieces=3), tiny_model("s", 4, 1)
    pairs = [("conv2", "conv2"), ("pool1", "pool1")]
    assert stages.stage_one_layer(teacher, student, hints=pairs) == "conv2"
    assert stages.stage_one_layer(teacher, student, None, "pool1", "pool1") == "pool1"
    with pytest.raises(ConfigError, match="Unknown guided_layer 'nope'"):
        stages.stage_one_layer(teacher, student, hints=[("pool1", "nope")])


def test_the_teacher_cache_holds_every_hint_in_pair_order():
    teacher = tiny_model("t", 6, 0, pieces=3)
    x = tiny_data(4)[0]
    outputs = teacher_cache.outputs_function(teacher, ["conv2", "pool1"])(x)
    conv2, pool1 = outputs["teacher_hint"]
    np.testing.assert_allclose(conv2, teacher_cache.outputs_function(teacher, "conv2")(x)["teacher_hint"])
    assert tuple(pool1.shape) == (4, 4, 4, 6)
    # Per example, float32: conv2 and pool1 are both 4×4×6.
    assert teacher_cache.hint_bytes(teacher, ["conv2", "pool1"], 10) == 2 * 4 * 4 * 6 * 4 * 10


def test_describe_layers_marks_the_candidates():
    table = hint_choice.describe_layers(tiny_model("s", 4, 1))
    lines = {line[3:].split()[0]: line for line in table.splitlines()[2:]}  # mark, 2 spaces
    assert lines["pool1"].startswith("*") and "(4, 4, 4)" in lines["pool1"]
    assert lines["bn"].startswith("*") and not lines["conv1"].startswith("*")
    assert "Dense" in lines["logits"] and "(3,)" in lines["logits"]


def test_one_regressor_layer_for_several_pairs_is_refused():
    # It was used for every pair: the same weights regressing two hints (or, with other
    # shapes, an error about pair 2's shape that did not say why).
    teacher, student = tiny_model("t", 6, 0), tiny_model("s", 6, 1)
    with pytest.raises(ConfigError, match="one regressor per pair: 2 pairs and one layer"):
        fitnets_tf.Distiller(teacher, student, hints=[("pool1", "pool1"), ("conv2", "conv2")],
                             regressor=keras.layers.Conv2D(6, 1))  # fmt: skip


# -- hints=auto on models of the user's kind: ResNet-style, Sequential, preprocessing --------


def _conv_bn(h, filters: int, name: str, strides: int = 1):
    h = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", name=f"{name}_conv")(h)
    h = keras.layers.BatchNormalization(name=f"{name}_bn")(h)
    return keras.layers.ReLU(name=f"{name}_relu")(h)


def _resnet_style_teacher() -> keras.Model:
    """A stem and three residual blocks (8×8, 4×4, 2×2): four feature layers, the lower
    middle one still at full resolution."""
    inputs = keras.Input((8, 8, 3))
    h = _conv_bn(inputs, 4, "stem")
    for name, filters, strides in (("b1", 4, 1), ("b2", 8, 2), ("b3", 16, 2)):
        shortcut = h
        h = _conv_bn(h, filters, f"{name}a", strides)
        h = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}b_conv")(h)
        if strides != 1:
            shortcut = keras.layers.Conv2D(filters, 1, strides=strides, name=f"{name}_proj")(shortcut)
        h = keras.layers.Add(name=f"{name}_add")([h, shortcut])
        h = keras.layers.ReLU(name=f"{name}_out")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(3)(h), name="resnet_style")


def _thin_deep_student(preprocessing=()) -> keras.Model:
    """Seven conv blocks: 8×8 (s1, s2), 4×4 (s3 to s5), 2×2 (s6, s7); the middle is s4."""
    inputs = keras.Input((8, 8, 3))
    h = inputs
    for layer in preprocessing:
        h = layer(h)
    for i, (filters, strides) in enumerate([(2, 1), (2, 1), (4, 2), (4, 1), (4, 1), (8, 2), (8, 1)]):
        h = _conv_bn(h, filters, f"s{i + 1}", strides)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(3)(h), name="thin_deep")


def test_auto_pair_of_an_even_resnet_hints_from_the_middle_that_lets_the_student_be_guided_at_its_middle():
    # It took the lower middle b1_out (8×8, full resolution): only the student's s2 is that
    # large, and stage 1 trained two conv layers of seven. The upper middle b2_out (4×4)
    # lets the student's middle s4 be guided.
    chosen = hint_choice.auto_pair(_resnet_style_teacher(), _thin_deep_student())
    assert (chosen.hint_layer, chosen.guided_layer) == ("b2_out", "s4_relu")
    assert chosen.reason == (
        "the paper's rule (the middle of the teacher guides the middle of the student): "
        "'b2_out' (4, 4, 8) is feature layer 3 of 4 of 'resnet_style', one of its two middle "
        "layers; 's4_relu' (4, 4, 4) is feature layer 4 of 7 of 'thin_deep', its middle; the "
        "convolutional regressor maps it onto the hint with a 1×1 kernel (k² · O_g · O_h = 32 "
        "weights); the other middle layer, 'b1_out' (8, 8, 4), would guide 's2_relu', farther "
        "from the student's middle"
    )


def test_auto_pair_of_a_sequential_teacher_is_both_middles():
    teacher = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
        keras.layers.BatchNormalization(name="bn1"),
        keras.layers.MaxPooling2D(name="p1"),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2"),
        keras.layers.BatchNormalization(name="bn2"),
        keras.layers.MaxPooling2D(name="p2"),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c3"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ], name="seq")  # fmt: skip
    chosen = hint_choice.auto_pair(teacher, _thin_deep_student())
    assert (chosen.hint_layer, chosen.guided_layer) == ("p2", "s4_relu")
    assert "'p2' (2, 2, 8) is feature layer 2 of 3 of 'seq', its middle;" in chosen.reason
    assert "'s4_relu' (4, 4, 4) is feature layer 4 of 7 of 'thin_deep', its middle;" in chosen.reason


def test_auto_pair_says_why_the_guided_layer_is_not_the_students_middle():
    # The student's middle (4×4) is smaller than the 8×8 hint: it said "the nearest to its
    # middle" of s2 whichever the reason, and of a first layer of four.
    inputs = keras.Input((8, 8, 3))
    h = _conv_bn(inputs, 4, "t1")
    h = _conv_bn(h, 4, "t2")
    h = _conv_bn(h, 8, "t3", strides=2)
    teacher = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)), name="t")
    chosen = hint_choice.auto_pair(teacher, _thin_deep_student())
    assert (chosen.hint_layer, chosen.guided_layer) == ("t2_relu", "s2_relu")
    assert (
        "'s2_relu' (8, 8, 2) is feature layer 2 of 7 of 'thin_deep', of the layers whose map is "
        "large enough for the hint's (the regressor can only shrink a map), the nearest to its "
        "middle (as near, 's6_relu' (2, 2, 8) is smaller than the hint);"
    ) in chosen.reason


def test_preprocessing_layers_are_not_hint_candidates():
    # An input Rescaling was starred in --list_layers and counted: the middle of
    # [rescale, s1..s7] was s3, not s4.
    layers = [keras.layers.Rescaling(1 / 255, name="rescale"),
              keras.layers.Normalization(mean=0.5, variance=0.25, name="norm"),
              keras.layers.RandomFlip(name="flip")]  # fmt: skip
    student = _thin_deep_student(layers)
    names = [layer.name for layer in hint_choice.feature_layers(student)]
    assert names == [f"s{i}_relu" for i in range(1, 8)]
    table = hint_choice.describe_layers(student)
    marks = {line[3:].split()[0]: line[0] for line in table.splitlines()[2:]}
    assert marks["rescale"] == marks["norm"] == marks["flip"] == " " and marks["s1_relu"] == "*"
    chosen = hint_choice.auto_pair(_resnet_style_teacher(), student)
    assert chosen.guided_layer == "s4_relu" and "feature layer 4 of 7" in chosen.reason


def test_every_unknown_name_of_the_pairs_is_named_at_once_with_close_matches(teacher, student):
    # Only the first unknown name was reported, without a suggestion: a typo in each of two
    # pairs took two runs to find.
    pairs = [("conv2x", "pool1"), ("pool1", "conv_2"), ("pool1", "nothing_like_it")]
    with pytest.raises(ConfigError) as refused:
        fitnets_tf.Distiller(teacher, student, hints=pairs)
    message = str(refused.value)
    assert "Pair 1 (conv2x:pool1): Unknown hint_layer 'conv2x' in model 'teacher' (did you mean " \
           "'conv2'" in message
    assert "Pair 2 (pool1:conv_2): Unknown guided_layer 'conv_2' in model 'student' (did you " \
           "mean 'conv2'" in message
    assert "Pair 3 (pool1:nothing_like_it): Unknown guided_layer 'nothing_like_it' in model " \
           "'student'. Teacher layers: " in message and "Student layers: " in message
    with pytest.raises(ConfigError, match=r"^Unknown guided_layer 'pool_1' in model 'student' "
                       r"\(did you mean 'pool1'\?\)\. Valid layer names: "):  # fmt: skip
        fitnets_tf.Distiller(teacher, student, "pool1", "pool_1")


def _named_net(prefix: str) -> keras.Model:
    inputs = keras.Input((4, 4, 1))
    h = keras.layers.Conv2D(2, 3, name=f"{prefix}_conv")(inputs)
    logits = keras.layers.Dense(2, name=f"{prefix}_logits")(keras.layers.Flatten()(h))
    return keras.Model(inputs, logits, name=prefix)


def test_a_pair_named_the_other_way_round_says_so():
    # Distiller(student, teacher, ...) or hints=[(guided, hint)]: each name was called unknown,
    # with the other model's layers listed but nothing to say they were there.
    teacher, student = _named_net("t"), _named_net("s")
    swapped = (r"Unknown hint_layer 's_conv' in model 't' \('s_conv' is a layer of the student "
               r"'s': a pair is \(teacher_layer, student_layer\), and the teacher comes first\)")
    with pytest.raises(ConfigError, match=swapped):
        fitnets_tf.Distiller(teacher, student, hints=[("s_conv", "t_conv")])
    with pytest.raises(ConfigError, match=r"'t_conv' is a layer of the student 't'"):
        fitnets_tf.Distiller(student, teacher, hints=[("t_conv", "s_conv")])


@pytest.mark.parametrize("hints", [("t_conv", "s_conv"), "t_conv:s_conv"], ids=["tuple", "flag"])
def test_one_pair_not_in_a_list_is_refused_with_the_list_to_give(hints):
    teacher, student = _named_net("t"), _named_net("s")
    with pytest.raises(ConfigError, match=r"Give hints=\[\('t_conv', 's_conv'\)\]"):
        fitnets_tf.Distiller(teacher, student, hints=hints)


class _SubclassedStudent(keras.Model):
    def __init__(self):
        super().__init__(name="sub")
        self.conv = keras.layers.Conv2D(2, 3, name="sub_conv")
        self.flat = keras.layers.Flatten(name="sub_flat")
        self.logits = keras.layers.Dense(2, name="sub_logits")

    def call(self, x):
        return self.logits(self.flat(self.conv(x)))


def test_describe_models_lists_a_subclassed_students_layers_as_the_distiller_takes_them():
    # The Distiller takes a subclassed student for hints, but describing the pair first was
    # refused: "`model` must be a Functional (or built Sequential) keras.Model".
    described = hint_choice.describe_models(_named_net("t"), _SubclassedStudent())
    assert "student 'sub':" in described and "*  sub_conv" in described
    assert "hints=auto chooses t_conv:sub_conv" in described


def test_each_regressor_of_several_pairs_is_named_after_its_guided_layer():
    # d.summary() showed three layers named "regressor": which pair was which, nobody could say.
    teacher, student = tiny_model("t", 6, 0, pieces=3), tiny_model("s", 4, 1)
    d = fitnets_tf.Distiller(teacher, student, hints=[("pool1", "pool1"), ("conv2", "conv2")])
    assert [r.name for r in d.regressors] == ["regressor_pool1", "regressor_conv2"]
    said = []
    d.summary(print_fn=lambda line, **kwargs: said.append(line))
    assert "regressor_pool1" in "\n".join(said) and "regressor_conv2" in "\n".join(said)
    # One guided layer of two pairs: the pair's number tells them apart.
    d = fitnets_tf.Distiller(teacher, student, hints=[("pool1", "conv2"), ("conv2", "conv2")])
    assert [r.name for r in d.regressors] == ["regressor_conv2_1", "regressor_conv2_2"]
    # One pair keeps the name it always had; a regressor of your own keeps its own.
    assert fitnets_tf.Distiller(teacher, student, "pool1", "pool1").regressor.name == "regressor"
    own = keras.layers.Conv2D(6, 1, name="mine")
    d = fitnets_tf.Distiller(teacher, student, hints=[("pool1", "pool1"), ("conv2", "conv2")],
                             regressor=[own, keras.layers.Conv2D(6, 1, name="theirs")])
    assert [r.name for r in d.regressors] == ["mine", "theirs"]


def test_weights_and_checkpoints_saved_when_every_regressor_was_named_regressor_still_load(
    tmp_path, monkeypatch
):
    # Keras' weights files and the run's checkpoints hold variables by position, not by layer
    # name: a Distiller saved before the regressors had their own names loads into one now.
    from fitnets_tf import regressor as regressor_lib
    from fitnets_tf.run import contents

    def distiller(seed: int):
        keras.utils.set_random_seed(seed)
        teacher, student = tiny_model("t", 6, 0, pieces=3), tiny_model("s", 4, 1)
        d = fitnets_tf.Distiller(teacher, student, hints=[("pool1", "pool1"), ("conv2", "conv2")])
        d.compile(optimizer=keras.optimizers.Adam(0.01), phase="hints")
        return d

    with monkeypatch.context() as patch:
        patch.setattr(regressor_lib, "regressor_names", lambda pairs: ["regressor"] * len(pairs))
        old = distiller(0)
    assert [r.name for r in old.regressors] == ["regressor", "regressor"]
    old.fit(tiny_dataset(), epochs=1, verbose=0)
    old.save_weights(tmp_path / "d.weights.h5")
    tf.train.Checkpoint(**contents.trackables(old)).write(str(tmp_path / "ckpt"))
    saved = [np.array(v) for v in old.variables + old.optimizer.variables]
    for load in ("weights", "checkpoint"):
        new = distiller(1)
        assert [r.name for r in new.regressors] == ["regressor_pool1", "regressor_conv2"]
        if load == "weights":
            new.load_weights(tmp_path / "d.weights.h5")
        else:
            tf.train.Checkpoint(**contents.trackables(new)).read(
                str(tmp_path / "ckpt")).assert_existing_objects_matched()  # fmt: skip
        loaded = [np.array(v) for v in new.variables + new.optimizer.variables]
        assert int(new.optimizer.iterations) == 4
        for a, b in zip(saved, loaded, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=load)
