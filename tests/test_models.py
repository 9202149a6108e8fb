"""Tests for fitnets_tf.models: specs, builder, layer names, paper pairs and cost counts."""

import functools

import keras
import numpy as np
import pytest
from conftest import tiny_dataset

from fitnets_tf import evaluation, models
from fitnets_tf.layers import MaxoutConv2D, MaxoutDense
from fitnets_tf.reporting.summary import summary_table


def _input_shape(name):
    return (28, 28, 1) if name.startswith("mnist") else (32, 32, 3)


@functools.cache
def _built(name):
    """Each paper net built once at its dataset's input shape, 10 classes (read-only use)."""
    return models.build(name, _input_shape(name), 10, seed=0)


STUDENTS = [n for n in models.ARCHITECTURES if models.get_spec(n).teacher is not None]


# --- Table 5: weights-only multiplications -------------------------------------------------


@pytest.mark.parametrize(
    "name, paper_mults, tolerance",
    [
        ("fitnet1", 30e6, 0.03),
        ("fitnet2", 108e6, 0.03),
        ("fitnet4", 382e6, 0.03),
        ("cifar_teacher", 725e6, 0.10),
    ],
)
def test_multiplications_match_paper(name, paper_mults, tolerance):
    mults = models.count_multiplications(_built(name))
    assert abs(mults - paper_mults) <= tolerance * paper_mults


def test_multiplications_by_hand():
    # FitNet 1, pieces * 9 * C_in * C_out * H * W per conv, then 64*500*5 (fc), 500*10.
    fitnet1 = 18 * ((3 * 16 + 16 * 16 + 16 * 16) * 1024 + (16 * 32 + 32 * 32 + 32 * 32) * 256)
    fitnet1 += 18 * (32 * 48 + 48 * 48 + 48 * 64) * 64 + 64 * 2500 + 500 * 10
    assert models.count_multiplications(_built("fitnet1")) == fitnet1 == 30_246_024
    # Teacher with ceil pooling: convs 33, 15, 9 wide; fc 5*5*192 -> 500x5.
    teacher = 2 * 64 * 3 * 96 * 33**2 + 2 * 64 * 96 * 192 * 15**2 + 2 * 25 * 192 * 192 * 9**2
    teacher += 5 * 5 * 192 * 2500 + 500 * 10
    assert models.count_multiplications(_built("cifar_teacher")) == teacher == 732_290_696


def test_count_small_custom_model():
    inputs = keras.Input((5, 5, 3))
    x = MaxoutConv2D(4, 3, pieces=2, padding=1)(inputs)  # 5x5 out: 2*9*3*4*25 = 5400
    x = keras.layers.MaxPooling2D(2)(x)  # ignored
    x = keras.layers.Conv2D(6, 2)(x)  # 1x1 out: 2*2*4*6 = 96
    x = keras.layers.BatchNormalization()(x)  # ignored
    x = keras.layers.Flatten()(x)
    x = MaxoutDense(3, pieces=5)(x)  # 5*6*3 = 90
    outputs = keras.layers.Dense(7)(x)  # 3*7 = 21
    model = keras.Model(inputs, outputs)
    assert models.count_multiplications(model) == 5400 + 96 + 90 + 21
    assert models.count_params(model) == model.count_params()

    # Nested models are recursed into; a shared layer counts once per call.
    outer_in = keras.Input((5, 5, 3))
    shared = keras.layers.Dense(2)  # applied to 7 features twice: 2 * 7*2
    y = model(outer_in)
    outer = keras.Model(outer_in, [shared(y), shared(y)])
    assert models.count_multiplications(outer) == 5400 + 96 + 90 + 21 + 2 * 14

    seq = keras.Sequential([keras.Input((6, 3)), keras.layers.Conv1D(4, 3), keras.layers.Dense(2)])
    assert models.count_multiplications(seq) == 3 * 3 * 4 * 4 + 4 * 2 * 4


def test_count_needs_known_shapes():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match="unknown output dimensions"):
        models.count_multiplications(model)


def test_parameter_counts():
    # Keras counts biases too; the paper's "~" figures are approximate (see PAPER.md).
    assert models.count_params(_built("fitnet1")) == 348_694
    assert models.count_params(_built("fitnet4")) == 2_742_102
    assert abs(models.count_params(_built("mnist_teacher")) - 361e3) <= 0.01 * 361e3


# --- Builder ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(models.ARCHITECTURES))  # the zoo: test_zoo.py
def test_every_architecture_builds_and_runs(name):
    model = _built(name)
    assert model.name == name
    assert model.get_layer("logits").activation is keras.activations.linear
    batch = np.random.default_rng(0).normal(size=(2, *_input_shape(name))).astype("float32")
    assert tuple(model(batch).shape) == (2, 10)


def test_layer_names_and_structure():
    fitnet1 = _built("fitnet1")
    assert [layer.name for layer in fitnet1.layers] == [
        "input",
        *[
            n
            for i in range(1, 10)
            for n in ([f"conv{i}", f"pool{i}"] if i in (3, 6, 9) else [f"conv{i}"])
        ],
        "fc",
        "logits",
    ]
    assert isinstance(fitnet1.get_layer("pool9"), keras.layers.GlobalMaxPooling2D)
    teacher = _built("cifar_teacher")
    rates = {
        layer.name: layer.rate
        for layer in teacher.layers
        if isinstance(layer, keras.layers.Dropout)
    }
    assert rates == {
        "dropout_input": 0.2,
        "dropout_1": 0.5,
        "dropout_2": 0.5,
        "dropout_3": 0.5,
        "dropout_fc": 0.5,
    }
    assert [teacher.get_layer(f"conv{i}").output.shape[1] for i in (1, 2, 3)] == [33, 15, 9]


def test_build_options():
    default = _built("fitnet1")
    assert (
        float(np.max(np.abs(default.get_layer("conv1").kernel.numpy()))) <= models.PAPER_INIT_RANGE
    )
    assert default.get_layer("conv1").max_norm == 0.9
    assert default.get_layer("fc").max_norm == 1.9
    # Seeded builds repeat; kernels of different layers differ even with one seed.
    again = models.build("fitnet1", (32, 32, 3), 10, seed=0)
    np.testing.assert_array_equal(
        default.get_layer("conv2").kernel, again.get_layer("conv2").kernel
    )
    assert not np.allclose(default.get_layer("conv2").kernel, default.get_layer("conv3").kernel)

    free = models.build(
        "cifar_teacher",
        (32, 32, 3),
        100,
        kernel_initializer="he_uniform",
        max_norm=False,
        dropout=0.0,
        input_dropout=0.0,
    )
    assert free.get_layer("conv1").max_norm is None
    assert free.get_layer("logits").kernel.constraint is None
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in free.layers)
    assert float(np.max(np.abs(free.get_layer("conv1").kernel.numpy()))) > models.PAPER_INIT_RANGE


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="fitnet1.*Received: name='resnet'"):
        models.build("resnet", (32, 32, 3), 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (32, 32), "num_classes": 10}, "input_shape"),
        ({"input_shape": (32, 32, 0), "num_classes": 10}, "input_shape"),
        ({"input_shape": (32, 32, 3), "num_classes": 0}, "num_classes"),
        ({"input_shape": (32, 32, 3), "num_classes": 10, "dropout": 1.0}, "dropout"),
        ({"input_shape": (2, 2, 3), "num_classes": 10}, "too small"),
    ],
)
def test_build_validates_arguments(kwargs, message):
    with pytest.raises(ValueError, match=f"{message}.*Received"):
        models.build("cifar_teacher", **kwargs)


# --- Hint / guided layers ----------------------------------------------------------------------


def test_paper_layer_names():
    assert models.hint_layer_name("cifar_teacher") == "pool2"
    assert models.guided_layer_name("fitnet1") == "pool6"
    assert models.guided_layer_name("fitnet4") == "pool11"
    assert models.guided_layer_name("depth11_30m") == "conv7"  # unpooled layer: conv output
    assert models.paper_pair("mnist_fitnet") == ("mnist_teacher", "pool2", "pool4")
    assert models.paper_pair("fitnet3").teacher == "cifar_teacher"
    with pytest.raises(ValueError, match="Received: layer=4"):
        models.paper_layer_name("cifar_teacher", 4)
    with pytest.raises(ValueError, match="not a student"):
        models.paper_pair("cifar_teacher")
    with pytest.raises(ValueError, match="not a teacher"):
        models.hint_layer_name("fitnet1")


@pytest.mark.parametrize("student", STUDENTS)
def test_paper_pairs_are_shape_compatible(student):
    teacher, hint_layer, guided_layer = models.paper_pair(student)
    hint = _built(teacher).get_layer(hint_layer).output.shape
    guided = _built(student).get_layer(guided_layer).output.shape
    # The regressor is a valid conv with k = N_g - N_h + 1, so the guided map must not be smaller.
    kernel = [g - h + 1 for g, h in zip(guided[1:3], hint[1:3], strict=True)]
    expected = {"mnist_fitnet": 1}.get(student, 4 if student.startswith("mnist_depth") else 2)
    assert kernel == [expected, expected]


def test_mnist_depth_nets_share_one_budget():
    # Fashion-MNIST's depth experiment: 5 to 15 layers at about mnist_fitnet's multiplications.
    budget = models.count_multiplications(_built("mnist_fitnet"))
    for depth in (5, 7, 9, 11, 13, 15):
        net = _built(f"mnist_depth{depth}")
        assert models.get_spec(f"mnist_depth{depth}").depth == depth
        assert 0.85 < models.count_multiplications(net) / budget < 1.1


def test_maxout_ties_reach_every_maxout_layer_of_a_paper_net():
    net = models.build("mnist_fitnet", (28, 28, 1), 10, seed=0, maxout_ties="one")
    maxouts = [layer for layer in net.layers if isinstance(layer, MaxoutConv2D)]
    assert len(maxouts) == 6 and {layer.ties for layer in maxouts} == {"one"}
    default = models.build("mnist_fitnet", (28, 28, 1), 10, seed=0)
    x = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(net(x), default(x))  # the same function, the same weights


def test_maxout_ties_is_an_option_of_the_paper_nets_only():
    from fitnets_tf import config as config_lib
    from fitnets_tf.errors import ConfigError

    base = config_lib.ExperimentConfig()  # the paper's MNIST pair
    base.with_values(maxout_ties="one").validate()
    assert base.fingerprint()["maxout_ties"] == "share"
    zoo = base.with_values(teacher="wide_cnn", student="thin_cnn", maxout_ties="one")
    with pytest.raises(ConfigError, match="--maxout_ties=one concerns the paper's maxout nets"):
        zoo.validate()
    with pytest.raises(ConfigError, match="maxout_ties"):
        base.with_values(maxout_ties="first").validate()


def test_maxout_ties_reach_a_student_files_maxout_layers(tmp_path):
    from fitnets_tf import builders
    from fitnets_tf import config as config_lib
    from fitnets_tf.errors import ConfigError
    from fitnets_tf.models import sources

    maxout_file, plain_file = str(tmp_path / "fitnet.keras"), str(tmp_path / "thin.keras")
    models.build("mnist_fitnet", (28, 28, 1), 10, seed=0).save(maxout_file)
    models.build("thin_cnn", (28, 28, 1), 10, seed=0).save(plain_file)
    # A teacher without maxout layers: only the student's can take the rule.
    base = config_lib.ExperimentConfig().with_values(teacher="wide_cnn", maxout_ties="one")
    for student in (maxout_file, plain_file):
        base.with_values(student=student).validate()  # whether it holds maxouts: once loaded
    student = builders.new_student(base.with_values(student=maxout_file), (28, 28, 1), 10)
    maxouts = [layer for layer in student.layers if isinstance(layer, sources.MAXOUT_LAYERS)]
    assert len(maxouts) == 6 and {layer.ties for layer in maxouts} == {"one"}
    shared = builders.new_student(base.with_values(student=maxout_file, maxout_ties="share"),
                                  (28, 28, 1), 10)  # fmt: skip
    assert {layer.ties for layer in shared.layers if hasattr(layer, "ties")} == {"share"}
    x = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(student(x), shared(x))  # same seed, same function
    with pytest.raises(ConfigError, match=f"the student {plain_file} has none"):
        builders.new_student(base.with_values(student=plain_file), (28, 28, 1), 10)


def test_depthwise_separable_and_transposed_convolutions_are_counted():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)(inputs)  # 4x4 out: 3*3*3*2*16 = 864
    x = keras.layers.SeparableConv2D(5, 3, padding="same")(x)  # (3*3*6*1 + 6*5)*16 = 1344
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)  # 4x4 *in*: 2*2*2*5*16 = 640
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))  # 2*4 = 8
    assert models.count_multiplications(model) == 864 + 1344 + 640 + 8
    assert models.uncounted_layers(model) == []


class _Gate(keras.layers.Layer):
    """A custom layer with a kernel of its own: its multiplications are unknown to the count."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 2))

    def call(self, x):
        return keras.ops.matmul(x, self.kernel)


def test_a_custom_layer_with_a_kernel_is_named_as_uncounted_and_leaves_the_run_row_without_mults():
    inputs = keras.Input((4,))
    x = keras.layers.Embedding(10, 3)(keras.ops.cast(inputs, "int32"))  # a table: no product
    x = keras.layers.PReLU()(keras.layers.Flatten()(x))  # a slope per position: none either
    inner = keras.Sequential([keras.Input((12,)), _Gate(name="gate")], name="inner")
    model = keras.Model(inputs, keras.layers.Dense(2)(inner(x)))
    assert models.uncounted_layers(model) == ["gate"]
    model.trainable = False  # a teacher, frozen by the Distiller: its kernels still multiply
    assert models.uncounted_layers(model) == ["gate"]
    assert models.count_multiplications(model) == 2 * 2  # the Dense alone: a partial count
    images = keras.Input((8, 8, 1))
    gated = _Gate(name="gate")(keras.layers.Flatten()(images))
    student = keras.Model(images, keras.layers.Dense(3)(gated), name="gated")
    row = evaluation.summary_row("kd", student, tiny_dataset(), None, False)
    assert row["mults"] is None and row["mults_uncounted"] == ["gate"]
    teacher = dict(name="teacher", test_accuracy=0.9, params=10, mults=100)
    assert summary_table([teacher, row]).splitlines()[-1] == (
        "kd: mults not counted: fitnets_tf does not know the multiplications of its layers gate"
    )
