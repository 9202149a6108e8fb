"""A trained teacher given as an ONNX file (fitnets_tf.models.onnx_model)."""

import keras
import numpy as np
import pytest
from conftest import tiny_data, tiny_model

from fitnets_tf import Distiller, errors, experiment, hint_choice, models
from fitnets_tf import config as config_lib
from fitnets_tf.export import writers
from fitnets_tf.models import onnx_model

SMOKE = config_lib.ExperimentConfig().with_values(
    dataset="synthetic", teacher="mnist_teacher", student="mnist_fitnet", init="he_uniform",
    modes=("kd",), kd_epochs=1, batch_size=64, limit=128, measure_latency=False,
)  # fmt: skip


def _channels_first(model: keras.Model, batch_size: int | None = None) -> keras.Model:
    """``model`` taking its images as (C, H, W), as a PyTorch model does; ``batch_size`` of
    them only, if given (its ONNX file's input then fixes it, as torch.onnx.export's does
    without dynamic_axes)."""
    height, width, channels = model.inputs[0].shape[1:]
    inputs = keras.Input((channels, height, width), batch_size=batch_size)
    return keras.Model(inputs, model(keras.layers.Permute((2, 3, 1))(inputs)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny teacher, and its ONNX files: logits channels-last, probabilities channels-first."""
    folder = tmp_path_factory.mktemp("onnx")
    model = tiny_model("teacher", width=4, seed=0, batch_norm=False)
    rng = np.random.default_rng(0)
    for layer in model.layers[1:]:  # biases not 0 nor equal, which a converter drops or merges
        if hasattr(layer, "bias"):
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype("float32"))
    writers.write_onnx(model, folder / "last.onnx")
    probs = keras.Model(model.inputs, keras.layers.Softmax()(model.outputs[0]))
    writers.write_onnx(_channels_first(probs), folder / "first.onnx")
    return model, folder


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def test_an_onnx_teacher_gives_the_logits_in_either_image_order(files):
    model, folder = files
    x, _ = tiny_data(4)
    logits = keras.ops.convert_to_numpy(model(x))
    last = onnx_model.load(folder / "last.onnx")  # its fixed sizes give the images' shape
    assert last.name == "last" and last.input_shape == (None, 8, 8, 1)
    assert not last.layers[-1].channels_first
    np.testing.assert_allclose(last(x), logits, atol=1e-5)
    first = onnx_model.load(folder / "first.onnx", (8, 8, 1))  # transposed for it
    assert first.get_layer("onnx_model").channels_first
    # Probabilities: their logarithms, the logits up to one number per image.
    np.testing.assert_allclose(first(x), _log_softmax(logits), atol=1e-5)
    assert models.count_params(first) == models.count_params(model)  # the file's weights
    assert models.uncounted_layers(first) == ["onnx_model"]


def test_a_student_distilled_from_the_onnx_file_is_the_one_from_the_keras_teacher(files):
    model, folder = files

    def distilled(teacher):
        student = tiny_model("student", width=2, seed=1)
        distiller = Distiller(teacher, student, temperature=4.0, kd_lambda=2.0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5), phase="kd")
        x, y = tiny_data(32)
        distiller.fit(x, y, batch_size=8, steps_per_epoch=4, shuffle=False, verbose=0)
        return student.get_weights()

    expected = distilled(model)
    for got in distilled(onnx_model.load(folder / "first.onnx")):
        np.testing.assert_allclose(got, expected.pop(0), rtol=1e-4, atol=1e-6)


def test_a_fixed_batch_onnx_file_is_fed_that_many_images_per_call(files, tmp_path, capsys):
    # torch.onnx.export without dynamic_axes gives (1, C, H, W): PyTorch's most common export.
    model, _ = files
    x, _ = tiny_data(5)
    logits = keras.ops.convert_to_numpy(model(x))
    for batch in (1, 3):  # 3: the last call's images padded, their outputs dropped
        writers.write_onnx(_channels_first(model, batch), tmp_path / f"batch{batch}.onnx")
        teacher = onnx_model.load(tmp_path / f"batch{batch}.onnx")
        told = capsys.readouterr().out
        assert f"'batch{batch}' (an ONNX model) takes a fixed batch of {batch} image" in told
        assert "dynamic_axes={'images': {0: 'batch'}}" in told  # the file's input name
        np.testing.assert_allclose(teacher(x), logits, atol=1e-5)
        # In a compiled function too, batches of 4 and of 1 (the last).
        np.testing.assert_allclose(teacher.predict(x, batch_size=4, verbose=0), logits,
                                   atol=1e-5)  # fmt: skip


def test_onnx_models_it_cannot_distil_from_are_refused(files, tmp_path):
    model, folder = files
    with pytest.raises(errors.ConfigError, match=r"takes images: tensor\(float\) \['batch', "
                       r"8, 8, 1\]; the Distiller gives it one batch of float images \(28, 28, 1\)"
                       r" \(channels last\) or \(1, 28, 28\)"):
        onnx_model.load(folder / "last.onnx", (28, 28, 1))
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    writers.write_onnx(keras.Model(inputs, keras.layers.Reshape((2, 32))(flat)),
                       tmp_path / "map.onnx")  # fmt: skip
    with pytest.raises(errors.ConfigError, match=r"returns \(4, 2, 32\); a teacher returns one "
                       r"\(N, classes\) tensor"):
        onnx_model.load(tmp_path / "map.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(errors.TeacherLoadError, match=r"Cannot load the teacher ONNX model "
                       r"'.*bad.onnx' \(.*\): it is damaged"):
        onnx_model.load(tmp_path / "bad.onnx", (8, 8, 1))
    with pytest.raises(errors.TeacherLoadError, match=r"gone.onnx' does not exist"):
        onnx_model.load(tmp_path / "gone.onnx", (8, 8, 1))


def test_an_onnx_teacher_of_channels_first_images_chooses_as_its_keras_model(files):
    # The Keras teacher behind the images' transpose: its pool1 (4, 4, 4), guiding 'bn'.
    model, folder = files
    student = tiny_model("student", 2, 1)
    keras_choice = hint_choice.auto_pair(model, student)
    distiller = Distiller(onnx_model.load(folder / "first.onnx"), student, hints="auto")
    chosen = distiller.auto_pair
    assert (keras_choice.hint_layer, keras_choice.guided_layer) == ("pool1", "bn")
    assert "pool1" in chosen.hint_layer and chosen.guided_layer == keras_choice.guided_layer
    assert f"'{chosen.hint_layer}' (4, 4, 4) is feature layer 1 of 2 of 'first'" in chosen.reason


def test_an_onnx_teacher_needs_hints_named_or_auto_and_takes_no_xla(files):
    _, folder = files
    path = str(folder / "first.onnx")
    with pytest.raises(errors.ConfigError, match=r"and --mode fitnet trains from hints: give "
                       r"--hints=auto \(the paper's middle layers\), or name them, "
                       r"--hints=TENSOR:GUIDED_LAYER \(--list_layers --mode=kd lists"):
        SMOKE.with_values(teacher_path=path, modes=("fitnet",)).validate()
    with pytest.raises(errors.ConfigError, match=r"which XLA cannot compile: drop --jit_compile"):
        SMOKE.with_values(teacher_path=path, jit_compile=True).validate()
    with pytest.raises(errors.ConfigError, match=r"is an ONNX model, a trained teacher: give it "
                       r"as --teacher_path"):
        SMOKE.with_values(teacher=path).validate()


def test_a_run_distils_from_an_onnx_teacher(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    # Biases not 0: the converter drops an addition of zeros, and the count would miss them.
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu",
                            bias_initializer="random_normal")(inputs)  # fmt: skip
    logits = keras.layers.Dense(10, bias_initializer="random_normal")
    teacher = keras.Model(inputs, logits(keras.layers.GlobalAveragePooling2D()(h)))
    # A fixed batch of 1 (PyTorch's export without dynamic_axes): timed as it runs, one image
    # per call, at batch 128 too.
    writers.write_onnx(_channels_first(teacher, batch_size=1), tmp_path / "teacher.onnx")
    config = SMOKE.with_values(teacher_path=str(tmp_path / "teacher.onnx"),
                               serving_runtimes=("litert", "onnxruntime"))  # fmt: skip
    row, kd = experiment.run(config, tmp_path / "run", log=lambda m: None)["models"]
    assert (row["name"], row["architecture"], kd["name"]) == ("teacher", "teacher", "kd")
    assert row["params"] == models.count_params(teacher) and row["mults"] is None
    # Its file timed in ONNX Runtime, which runs it (channels first); LiteRT cannot take it.
    timed = {key.removeprefix("latency_ms_per_image_") for key in row if "latency" in key}
    assert timed == {"batch1_onnxruntime", "batch128_onnxruntime"}
    assert {f"latency_ms_per_image_batch1_{r}" for r in ("litert", "onnxruntime")} <= set(kd)
