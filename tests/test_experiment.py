"""The Python API of a run refuses bad input before any expensive work, and is seeded."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import quadrant_teacher

from fitnets_tf import builders, class_order, data, errors, evaluation, experiment, teacher_scaling
from fitnets_tf import config as config_lib
from fitnets_tf.run import io, layout, resume, student_file, teacher_file

SMOKE = config_lib.ExperimentConfig().with_values(
    dataset="synthetic", teacher="mnist_teacher", student="mnist_fitnet", init="he_uniform",
    modes=("kd",), teacher_epochs=1, kd_epochs=1, batch_size=64, limit=128,
    measure_latency=False, learning_rate=1e-3,
)  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"kd_lambda": -1.0}, "kd_lambda must be >= 0"),
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
        ({"student": "resnet"}, "unknown student 'resnet'"),
        ({"modes": ("joint",)}, "unknown mode 'joint'"),
        ({"stages": ("warmup",)}, "unknown stage 'warmup'"),
        ({"preprocessing": "standardize"}, "--preprocessing=standardize needs --input_mean and "
         "--input_std: the mean and std of torchvision's Normalize"),
        ({"input_mean": (0.5,), "input_std": (0.2,)}, "--input_mean and --input_std are the "
         "constants of --preprocessing=standardize, and this --preprocessing is 'auto': add "
         "--preprocessing=standardize, or drop them"),
        ({"preprocessing": "standardize", "input_mean": (0.5,), "input_std": (0.0,)},
         r"--input_std must be positive and finite \(a standard deviation\), got 0.0"),
        # The synthetic images have one channel, known before any is read.
        ({"preprocessing": "standardize", "input_mean": (0.485, 0.456, 0.406),
          "input_std": (0.229,)}, "--input_mean has 3 values and the images 1 channel"),
        ({"preprocessing": "standardize", "input_mean": (123.675,), "input_std": (58.395,)},
         r"--input_mean must be in \[0, 1\].*123.675 is 0.485"),
    ],
)
def test_bad_config_fails_before_anything_is_written(tmp_path, change, message, fit_calls):
    with pytest.raises(errors.ConfigError, match=message):
        experiment.run(SMOKE.with_values(**change), tmp_path / "run")
    assert fit_calls == [] and not (tmp_path / "run").exists()


def test_unmatchable_layers_fail_before_training(tmp_path):
    config = SMOKE.with_values(modes=("fitnet",), hint_layer="conv1", guided_layer="pool2")
    with pytest.raises(ValueError, match="hint map is larger"):
        experiment.run(config, tmp_path)
    assert not (tmp_path / "teacher" / "teacher.keras").exists()


def test_missing_or_unsafe_teacher_is_refused(tmp_path):
    with pytest.raises(errors.TeacherLoadError, match="No teacher at"):
        experiment.load_teacher(tmp_path / "nope.keras")
    # A .keras file with a Lambda layer would run arbitrary code: safe_mode refuses it.
    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Dense(10)(keras.layers.Lambda(lambda t: t * 2)(keras.layers.Flatten()(inputs)))
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    with pytest.raises(errors.TeacherLoadError, match="Cannot load the teacher.*safe_mode"):
        experiment.load_teacher(tmp_path / "lambda.keras")


def test_unwritable_workdir_is_refused():
    with pytest.raises(errors.WorkdirError, match="Cannot write to the run directory"):
        layout.prepare("/proc/fitnets_tf_run")


def test_missing_dataset_is_reported_fast(tmp_path, network_attempts, fit_calls):
    with pytest.raises(data.DatasetNotFoundError, match="Looked for"):
        experiment.run(SMOKE.with_values(dataset="cifar10", data_dir=str(tmp_path)),
                       tmp_path / "run")  # fmt: skip
    assert network_attempts == [] and fit_calls == []


@pytest.mark.slow  # three runs; a seed's determinism is pinned in the default suite by resumes
def test_same_seed_same_result_other_seed_other_result(tmp_path):
    def accuracies(seed, name):
        summary = experiment.run(SMOKE.with_values(seed=seed, deterministic=True),
                                 tmp_path / name, log=lambda m: None)  # fmt: skip
        return [r["test_accuracy"] for r in summary["models"]], [
            h["loss"] for h in summary["histories"]["kd"].values()
        ]

    first, again, other = accuracies(0, "a"), accuracies(0, "b"), accuracies(1, "c")
    assert first == again
    assert first[1] != other[1]  # the losses differ: other weights, other order
    versions = (tmp_path / "a" / "versions.json").read_text()
    assert '"seed": 0' in versions
    with pytest.raises(errors.ConfigMismatchError):
        experiment.run(SMOKE.with_values(seed=5), tmp_path / "a")
    assert np.isfinite(first[1][0]).all()


def test_cached_teacher_outputs_train_like_the_live_teacher(tmp_path):
    # Same batches, same targets: the histories of fitnet (cached hint and logits) and kd
    # agree with the live teacher's up to float rounding.
    config = SMOKE.with_values(modes=("fitnet", "kd"), hints_epochs=1, kd_epochs=2,
                                 deterministic=True)  # fmt: skip
    live_logs, logs = [], []
    live = experiment.run(config.with_values(cache_teacher="no"), tmp_path / "live",
                          log=live_logs.append)  # fmt: skip
    # cache_teacher="auto" (the default): cached, since nothing is augmented.
    cached = experiment.run(config, tmp_path / "cached", log=logs.append)
    assert any("teacher cache: logits and hints of 128 training examples" in m for m in logs)
    assert not any("teacher cache" in m for m in live_logs)
    for mode in ("fitnet", "kd"):
        for stage, history in live["histories"][mode].items():
            for key, values in history.items():
                np.testing.assert_allclose(cached["histories"][mode][stage][key], values,
                                           rtol=2e-3, err_msg=f"{mode}/{stage} {key}")  # fmt: skip
    # The same run directory accepts either setting: the batches and targets are the same.
    assert "cache_teacher" not in config.fingerprint()


def test_teacher_cache_with_augmentation_is_refused_before_work(tmp_path):
    config = SMOKE.with_values(augment=True, cache_teacher="yes")
    with pytest.raises(errors.ConfigError, match="Refusing to cache teacher outputs.*--augment"):
        experiment.run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("validation_size", "split"), [(None, "validation"), (0, "test")])
def test_a_teacher_at_chance_is_reported_before_it_teaches(tmp_path, validation_size, split):
    """A trained teacher that does not know this data's labels (another class order, say)
    is named in the log before any student trains on its outputs; without a validation split,
    from the test split."""
    teacher = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(10, kernel_initializer="zeros")])  # fmt: skip
    teacher.save(tmp_path / "teacher.keras")  # every prediction is class 0: accuracy ~ 1/10
    lines = []
    run = SMOKE.with_values(teacher_path=str(tmp_path / "teacher.keras"))
    if validation_size is not None:
        run = run.with_values(validation_size=validation_size)
    summary = experiment.run(run, tmp_path / "run", log=lambda line: lines.append(str(line)))
    assert summary["teacher"] == str(tmp_path / "teacher.keras")  # the one used, not --teacher
    accuracy = [line for line in lines if line.startswith(f"teacher: {split} accuracy")]
    assert len(accuracy) == 1 and "(chance 0.1000)" in accuracy[0]
    assert any(line.startswith(f"warning: the teacher is near chance on the {split} images")
               for line in lines)  # fmt: skip


def _mean_brightness_teacher(rescales: bool) -> keras.Model:
    """Class k of 4 when the mean of the image, as it was trained (pixels / 255), is in
    [k/4, (k+1)/4); ``rescales``: it takes raw pixels, through a first Rescaling(1/255)."""
    first = [keras.layers.Rescaling(1 / 255)] if rescales else []
    head = keras.layers.Dense(4)
    model = keras.Sequential([keras.Input((4, 4, 1)), *first,
                              keras.layers.GlobalAveragePooling2D(), head])  # fmt: skip
    head.set_weights([np.array([[0.0, 100, 200, 300]]), np.array([0.0, -25, -75, -150])])
    return model


def _brightness_batches(scale: float, rounds: int = 1):
    """32 images a round, 8 of each class (mean pixel / 255 of 0.1, 0.4, 0.6, 0.9).

    The teacher check counts copies once, so each image differs from the others of its class
    in one pixel, 0.0005 per round brighter in the two darker classes and darker in the two
    brighter ones: their mean (0.5) and std (0.2915) stay as the messages pin them."""
    means = np.tile(np.repeat([0.1, 0.4, 0.6, 0.9], 8), rounds).astype("float32")
    index = np.arange(len(means))
    images = np.ones((len(means), 16), "float32") * means[:, None]
    images[index, index % 16] += np.where(means < 0.5, 1, -1) * 0.0005 * (1 + index // 32)
    images = images.reshape(-1, 4, 4, 1) * scale
    return tf.data.Dataset.from_tensor_slices((images, np.tile(np.repeat(np.arange(4), 8),
                                                               rounds))).batch(16)  # fmt: skip


@pytest.mark.parametrize(("rescales", "preprocessing", "fix"),
                         [(True, "scale", "none"), (False, "none", "scale")])  # fmt: skip
def test_a_teacher_trained_on_other_pixel_scaling_is_refused_with_the_flag(
    rescales, preprocessing, fix
):
    """A Keras teacher that rescales its own inputs, fed pixels / 255, sees black images and
    scores at chance: the run names the --preprocessing that feeds it what it was trained on."""
    teacher = _mean_brightness_teacher(rescales)
    fed = _brightness_batches(255.0 if preprocessing == "none" else 1.0)
    with pytest.raises(errors.ConfigError, match=f"right on 0.2500 of the first 32 validation "
                                                 f"images .* but on 1.0000 of the same images "
                                                 f".* --preprocessing={fix},"):  # fmt: skip
        evaluation.check_teacher(teacher, fed, preprocessing, 4)
    # Fed what it was trained on, it is reported, not refused.
    lines = evaluation.check_teacher(teacher, _brightness_batches(255.0 if rescales else 1.0),
                                     "none" if rescales else "scale", 4)  # fmt: skip
    assert lines == ["teacher: validation accuracy 1.0000 (chance 0.2500)"]


def _quadrant_batches(scale: float) -> tf.data.Dataset:
    """32 images, 8 of each class: its quadrant 0.9 (as pixels / 255), the others 0.1. Each is
    distinct (the check counts copies once): one pixel of its opposite quadrant is 0.0001 per
    image of its class darker, which leaves its brightest two quadrants as they were."""
    images = np.full((32, 4, 4, 1), 0.1, "float32")
    for i in range(32):
        row, col = divmod(i % 4, 2)
        images[i, 2 * row:2 * row + 2, 2 * col:2 * col + 2] = 0.9
        images[i, 2 * (1 - row), 2 * (1 - col)] -= 0.0001 * (1 + i // 4)
    return tf.data.Dataset.from_tensor_slices((images * scale, np.arange(32) % 4)).batch(16)


@pytest.mark.parametrize(("gain", "preprocessing", "said"), [
    # Trained on pixels / 255 (4.0 apart), fed raw pixels: 1020 apart, one-hot soft targets.
    (5.0, "none", "are 1020 apart (median) on the first 32 validation images as this run feeds "
                  "them (--preprocessing=none), 255 times as far as on the same images as "
                  "pixels / 255 (4.00): at τ=3 its soft targets are near one-hot (mean top "
                  "probability 1.0000; 0.5584 as pixels / 255)"),
    # Trained on raw pixels (4.0 apart), fed pixels / 255: 0.016 apart, near uniform.
    (5.0 / 255, "scale", "are 0.016 apart (median) on the first 32 validation images as this "
                         "run feeds them (--preprocessing=scale), 255 times closer than on the "
                         "same images as raw pixels (4.00): at τ=3 its soft targets are near "
                         "uniform (mean top probability 0.2510; 0.5584 as raw pixels)"),
])  # fmt: skip
def test_the_run_warns_of_a_teacher_whose_logits_are_255_times_off(gain, preprocessing, said):
    # Right on every image either way, so the sign test passes it; the logits tell.
    fed = _quadrant_batches(255.0 if preprocessing == "none" else 1.0)
    lines = evaluation.check_teacher(quadrant_teacher(gain), fed, preprocessing, 4,
                                     temperature=3.0)  # fmt: skip
    assert lines[0] == "teacher: validation accuracy 1.0000 (chance 0.2500)" and len(lines) == 2
    assert said in lines[1]
    fix = {"none": "scale", "scale": "none"}[preprocessing]
    assert f"run with --preprocessing={fix}, which feeds both models so" in lines[1]
    # Fed as trained (the gain 255 times the other way), nothing more; a teacher the run
    # trained on these images is not checked either.
    other = _quadrant_batches(1.0 if preprocessing == "none" else 255.0)
    assert evaluation.check_teacher(quadrant_teacher(gain), other, fix, 4,
                                    temperature=3.0) == [lines[0]]  # fmt: skip
    assert evaluation.check_teacher(quadrant_teacher(gain), fed, preprocessing, 4,
                                    other_scalings=False, temperature=3.0) == [lines[0]]


def _normalized_brightness_teacher() -> keras.Model:
    """Class k of 4 by the mean of the image as it was trained: behind torchvision's
    Normalize(0.5, 0.2915), the mean and std of :func:`_brightness_batches`' images, whose
    classes' means it sees as -1.37, -0.34, 0.34 and 1.37 (its bounds -0.86, 0, 0.86)."""
    head = keras.layers.Dense(4)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.GlobalAveragePooling2D(),
                              head])  # fmt: skip
    head.set_weights([np.array([[0.0, 100, 200, 300]]), np.array([0.0, 85.7, 85.7, 0])])
    return model


def test_a_teacher_well_above_chance_but_trained_on_other_inputs_is_refused():
    # Fed pixels / 255, the teacher trained behind a Normalize calls the two darker classes'
    # images class 2: right on 0.5 of them, twice chance, and it taught its mistakes.
    teacher = _normalized_brightness_teacher()
    images = _brightness_batches(1.0, rounds=4)  # 32 images a class
    with pytest.raises(errors.ConfigError, match=(
            r"right on 0.5000 of the first 128 validation images fed as this run feeds them "
            r"\(pixels / 255, --preprocessing=scale, .* but on 1.0000 of the same images "
            r"standardised per channel by their own mean \(0.5000\) and std \(0.2915\), .* "
            r"Run with --preprocessing=standardize --input_mean=0.5000 --input_std=0.2915,")):
        evaluation.check_teacher(teacher, images, "scale", 4)
    # Fed what it was trained on, it is reported.
    standardized = images.map(lambda x, y: ((x - 0.5) / 0.2915, y))
    lines = evaluation.check_teacher(teacher, standardized, "standardize", 4,
                                     input_mean=(0.5,), input_std=(0.2915,))  # fmt: skip
    assert lines == ["teacher: validation accuracy 1.0000 (chance 0.2500)"]


@pytest.mark.parametrize(("mean", "std"), [(0.5, 0.2915), (0.49, 0.3)])
def test_a_standardize_run_given_its_teachers_constants_or_close_ones_is_not_refused(mean, std):
    # The images' classes standardised by (0.49, 0.3) are -1.30, -0.30, 0.37, 1.37: on the
    # same side of the teacher's bounds (-0.86, 0, 0.86) as by its own (0.5, 0.2915).
    teacher = _normalized_brightness_teacher()
    fed = _brightness_batches(1.0, rounds=4).map(
        lambda x, y: ((x - mean) / std, y))  # fmt: skip
    assert evaluation.check_teacher(teacher, fed, "standardize", 4, input_mean=(mean,),
                                    input_std=(std,)) == [  # fmt: skip
        "teacher: validation accuracy 1.0000 (chance 0.2500)"]


def test_a_standardize_run_given_swapped_constants_is_refused_with_the_right_ones():
    # --input_mean=0.2915 --input_std=0.5 (Normalize's mean and std swapped) feeds the classes
    # as -0.38, 0.22, 0.62, 1.22: the two darker ones are called one class up.
    teacher = _normalized_brightness_teacher()
    fed = _brightness_batches(1.0, rounds=4).map(
        lambda x, y: ((x - 0.2915) / 0.5, y))  # fmt: skip
    with pytest.raises(errors.ConfigError, match=(
            r"right on 0.5000 of the first 128 validation images fed as this run feeds them "
            r"\(pixels / 255 standardised by --preprocessing=standardize --input_mean=0.2915 "
            r"--input_std=0.5\), but on 1.0000 of the same images standardised per channel by "
            r"their own mean \(0.5000\) and std \(0.2915\), .* Run with --preprocessing="
            r"standardize --input_mean=0.5000 --input_std=0.2915, .*; with a teacher trained "
            r"behind a Normalize, give its own values")):
        evaluation.check_teacher(teacher, fed, "standardize", 4, input_mean=(0.2915,),
                                 input_std=(0.5,))  # fmt: skip


def test_the_other_scalings_of_a_standardize_run_leave_out_its_own():
    # The images' own statistics are the run's constants, to the flags' 4 decimals: not tried.
    unit = np.repeat([0.1, 0.4, 0.6, 0.9], 8).astype("float32")[:, None, None, None]
    tried = list(teacher_scaling._alternatives(unit, "standardize", (0.50001,), (0.2915,)))
    assert [flags for _, flags, _ in tried] == ["--preprocessing=scale", "--preprocessing=none"]
    np.testing.assert_allclose(tried[1][2], unit * 255)
    tried = list(teacher_scaling._alternatives(unit, "standardize", (0.5,), (0.3,)))
    assert tried[2][1] == "--preprocessing=standardize --input_mean=0.5000 --input_std=0.2915"


def test_a_standardize_check_without_the_runs_constants_is_a_programming_error():
    teacher = _normalized_brightness_teacher()
    with pytest.raises(ValueError, match=r"needs the run's `mean` and `std`"):
        evaluation.check_teacher(teacher, _brightness_batches(1.0), "standardize", 4)


def test_an_rgb_teacher_trained_on_imagenets_normalize_is_named_imagenets_constants():
    # Class k by the red channel behind ImageNet's Normalize (its bounds -1, 0, 1): fed pixels
    # / 255, every image is class 2. The images' own statistics sort them as well: of equal
    # gains the check names ImageNet's constants, the ones a teacher is trained on.
    head = keras.layers.Dense(4)
    teacher = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.GlobalAveragePooling2D(),
                                head])  # fmt: skip
    head.set_weights([np.array([[0.0, 100, 200, 300], [0] * 4, [0] * 4]),
                      np.array([0.0, 100, 100, 0])])  # fmt: skip
    red = np.repeat([0.1, 0.4, 0.6, 0.9], 8).astype("float32")
    images = np.full((32, 4, 4, 3), 0.5, "float32")
    images[..., 0] = red[:, None, None]
    images[:, 0, 0, 1] += np.arange(32) * 0.001  # distinct, in a channel the teacher ignores
    fed = tf.data.Dataset.from_tensor_slices((images, np.repeat(np.arange(4), 8))).batch(16)
    with pytest.raises(errors.ConfigError, match=(
            r"right on 0.2500 .* but on 1.0000 of the same images standardised by ImageNet's "
            r"mean and std .* --input_mean=0.4850,0.4560,0.4060 --input_std=0.2290,0.2240,0.2250,")):
        evaluation.check_teacher(teacher, fed, "scale", 4)
    # Given ImageNet's constants, it is fed what it knows; none of the others sorts it better.
    imagenet = [np.asarray(v, "float32") for v in teacher_scaling.IMAGENET]
    standardized = fed.map(lambda x, y: ((x - imagenet[0]) / imagenet[1], y))
    assert evaluation.check_teacher(teacher, standardized, "standardize", 4,
                                    input_mean=teacher_scaling.IMAGENET[0],
                                    input_std=teacher_scaling.IMAGENET[1]) == [  # fmt: skip
        "teacher: validation accuracy 1.0000 (chance 0.2500)"]


def test_an_rgb_teacher_trained_on_pixels_given_imagenets_constants_is_refused():
    # Class k by the red channel of pixels / 255 (its bounds 0.25, 0.5, 0.75), fed standardised
    # by ImageNet's constants: the reds 0.1, 0.4, 0.6, 0.9 become -1.68, -0.37, 0.50, 1.81.
    head = keras.layers.Dense(4)
    teacher = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.GlobalAveragePooling2D(),
                                head])  # fmt: skip
    head.set_weights([np.array([[0.0, 100, 200, 300], [0] * 4, [0] * 4]),
                      np.array([0.0, -25, -75, -150])])  # fmt: skip
    red = np.repeat([0.1, 0.4, 0.6, 0.9], 32).astype("float32")
    images = np.full((128, 4, 4, 3), 0.5, "float32")
    images[..., 0] = red[:, None, None]
    images[:, 0, 0, 1] += np.arange(128) * 0.001  # distinct, in a channel the teacher ignores
    mean, std = (np.asarray(v, "float32") for v in teacher_scaling.IMAGENET)
    fed = tf.data.Dataset.from_tensor_slices(((images - mean) / std, np.repeat(np.arange(4), 32)))
    with pytest.raises(errors.ConfigError, match=(
            r"right on 0.7500 .* \(pixels / 255 standardised by --preprocessing=standardize "
            r"--input_mean=0.485,0.456,0.406 --input_std=0.229,0.224,0.225\), but on 1.0000 of "
            r"the same images as pixels / 255: .* Run with --preprocessing=scale,")):
        evaluation.check_teacher(teacher, fed.batch(16), "standardize", 4,
                                 input_mean=teacher_scaling.IMAGENET[0],
                                 input_std=teacher_scaling.IMAGENET[1])  # fmt: skip


def test_the_sign_test_of_two_scalings():
    # 26 more right of 512 (a gain of 0.05), alone among the differing answers: 0.5 ** 26.
    base, other = np.zeros(512, bool), np.zeros(512, bool)
    other[:26] = True
    assert teacher_scaling.sign_test(base, other) == pytest.approx(1.49e-8, rel=1e-2)
    base[26:36] = True  # and 10 the other way: P(X >= 26) of Binomial(36, 1/2)
    assert teacher_scaling.sign_test(base, other) == pytest.approx(0.005665, rel=1e-3)
    assert teacher_scaling.sign_test(base, base) == 1.0


def test_a_mediocre_teacher_fed_its_own_scaling_is_not_refused():
    # 52 of 128 images mislabelled: right on 0.59 of them, and worse on every other scaling.
    teacher = _mean_brightness_teacher(rescales=False)
    images, labels = next(iter(_brightness_batches(1.0, rounds=4).unbatch().batch(128)))
    labels = np.where(np.arange(128) % 5 < 2, (labels.numpy() + 1) % 4, labels.numpy())
    fed = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    assert evaluation.check_teacher(teacher, fed, "scale", 4) == [
        "teacher: validation accuracy 0.5938 (chance 0.2500)"]


def _rotated_labels(per_class: int, counts=None):
    """A teacher sure of 3 brightness classes, and images whose labels are its own rotated by
    one (another class order): it is right on none. ``counts``: images of each class."""
    head = keras.layers.Dense(3)
    teacher = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.GlobalAveragePooling2D(),
                                head])  # fmt: skip
    head.set_weights([np.array([[0.0, 10, 20]]), np.array([0.0, -2.5, -7.5])])
    counts = counts or [per_class] * 3
    means = np.repeat([0.1, 0.4, 0.8], counts).astype("float32")
    images = np.ones((len(means), 16), "float32") * means[:, None]
    index = np.arange(len(means))  # each image distinct: the check counts copies once
    images[index, index % 16] += 0.0001 * (1 + index // 16)
    images = images.reshape(-1, 4, 4, 1)
    labels = (np.repeat(np.arange(3), counts) + 1) % 3
    return teacher, tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)


def test_a_teacher_trained_with_another_class_order_is_refused_with_the_teachers_order():
    # Every label rotated by one: 0 of 30 right. It was warned "near chance" and distilled,
    # teaching the student the wrong names. The message names the folders' fix.
    teacher, images = _rotated_labels(10)
    with pytest.raises(errors.ConfigError, match=r"calls classes by other labels than this "
                       r"data's: on the validation images \(accuracy 0.0000\), label 0 \('a'\) "
                       r"is its class 2 for 10 of 10 images; label 1 \('b'\) is its class 0 .*"
                       r"another class order.*here 0_b, 1_c, 2_a\)\.$"):  # fmt: skip
        evaluation.check_teacher(teacher, images, "scale", 3, ["a", "b", "c"])


def _relabelled_teacher(swapped: list[int], right: float, per_class: int = 10, classes: int = 10,
                        seed: int = 0):  # fmt: skip
    """A stand-in teacher and its validation images: it gives each image its label renamed by
    ``swapped`` (a permutation) for a ``right`` share of them, a random class for the rest.
    The image holds the answer (its first pixel), so a Lambda layer gives it."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    answers = np.where(rng.random(len(labels)) < right, np.asarray(swapped)[labels],
                       rng.integers(0, classes, len(labels)))  # fmt: skip
    images = np.zeros((len(labels), 2, 2, 1), "float32")
    images[:, 0, 0, 0] = answers
    images[:, 1, 1, 0] = np.arange(len(labels)) * 1e-6  # each distinct: copies count once
    teacher = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Lambda(
        lambda x: keras.ops.one_hot(keras.ops.cast(x[:, 0, 0, 0], "int32"), classes) * 10)])
    return teacher, tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)


TORCHVISION = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]  # fmt: skip


def test_a_teacher_with_some_classes_under_other_labels_is_refused_though_above_chance():
    # A teacher trained in torchvision's Fashion-MNIST order, on folders named by class: sorted,
    # 4 of the 10 keep their index and it scored 0.33 (chance 0.10): distilled, unwarned.
    names = sorted(TORCHVISION)
    teacher, images = _relabelled_teacher([TORCHVISION.index(n) for n in names], right=0.9)
    with pytest.raises(errors.ConfigError, match=r"\(accuracy 0.3500\), label 1 \('Bag'\) is its "
                       r"class 8 for 10 of 10 images; .* \(and 1 more labels\)\. .*here 0_T-shirt_top, 1_Trouser, "
                       r"2_Pullover, 3_Dress, 4_Coat, 5_Sandal, 6_Shirt, 7_Sneaker, 8_Bag, "
                       r"9_Ankle boot\)\.$"):  # fmt: skip
        evaluation.check_teacher(teacher, images, "scale", 10, names)


def test_a_teacher_confusing_classes_or_at_chance_is_not_taken_for_another_order():
    # Two classes it mixes up (label 1's images mostly called 0, as 0's own are): a weak
    # teacher, not a relabelled one. And 10 draws of answers unrelated to the labels.
    confused = list(range(10))
    confused[1] = 0
    teacher, images = _relabelled_teacher(confused, right=0.7)
    assert evaluation.check_teacher(teacher, images, "scale", 10)[0] == (
        "teacher: validation accuracy 0.6000 (chance 0.1000)")  # fmt: skip
    for seed in range(10):
        teacher, images = _relabelled_teacher(list(range(10)), right=0.0, seed=seed)
        lines = evaluation.check_teacher(teacher, images, "scale", 10)
        assert lines[1].startswith("warning: the teacher is near chance"), seed


def test_a_teacher_trained_an_epoch_that_puts_classes_on_one_is_not_taken_for_another_order():
    # The answers of the smoke config's teacher after 1 epoch (validation images, labels by
    # row): it puts labels 6, 7 and 9 on class 3 and label 8 on 6. It was refused as trained
    # with another order ("label 6 is its class 3 for 28 of 31 images"): renaming 6 -> 3 takes
    # class 3 from label 3, whose images go nowhere else.
    counts = np.array([[11, 15, 0, 0, 0, 0, 0, 0, 0, 0], [0, 29, 0, 0, 0, 0, 0, 0, 0, 0],
                       [0, 1, 21, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 25, 0, 0, 0, 0, 0, 0],
                       [0, 19, 0, 4, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 28, 0, 0, 0, 0],
                       [0, 0, 0, 28, 0, 2, 1, 0, 0, 0], [0, 4, 0, 21, 0, 1, 0, 0, 0, 0],
                       [0, 0, 0, 3, 0, 6, 16, 0, 1, 0], [0, 0, 0, 19, 0, 0, 0, 0, 0, 0]])
    labels = np.repeat(np.arange(10), counts.sum(axis=1))
    answers = np.concatenate([np.repeat(np.arange(10), row) for row in counts])
    assert class_order.relabelling(answers, labels, 10) is None


def test_a_teacher_far_below_chance_without_one_renaming_is_refused_as_another_order():
    # Each label's images split over the two other classes: 0 of 90 right where unrelated
    # answers get 30 ((2/3)^90 = 1.5e-16), but no one renaming makes them right.
    teacher, images = _relabelled_teacher([1, 2, 0], right=1.0, per_class=30, classes=3)
    images = images.unbatch().enumerate().map(
        lambda i, xy: (xy[0] + tf.cast(i % 2, "float32") * tf.constant(
            [[[1.0], [0.0]], [[0.0], [0.0]]]) % 3, xy[1])).batch(32)  # odd ones renamed twice
    with pytest.raises(errors.ConfigError, match=r"far below chance: 0 of the 90 validation "
                       r"images right, where answers unrelated to the labels would get 30.0"):
        evaluation.check_teacher(teacher, images, "scale", 3, ["a", "b", "c"])


def test_too_few_images_below_chance_are_warned_of_not_refused():
    # 0 of 9 right happens to an unrelated teacher with odds (2/3)^9 = 0.026: not refused.
    teacher, images = _rotated_labels(3)
    lines = evaluation.check_teacher(teacher, images, "scale", 3)
    assert lines[0] == "teacher: validation accuracy 0.0000 (chance 0.3333)"
    assert "It is below chance (0 of the 9 validation images right, where answers unrelated " \
           "to the labels would get 3.0), the sign of another class order" in lines[1]


def test_copies_of_a_validation_image_count_once_in_the_teacher_check():
    # 3 images repeated 10 times (a file copied into its class folder, a repeated dataset)
    # were read as 30: a teacher calling them by rotated labels was refused as trained with
    # another class order "for 10 of 10 images". Each (image, label) counts once, as in
    # Distiller.fit's check: 3 images are too few to refuse, and it is warned of.
    teacher, images = _rotated_labels(1)
    repeated = images.unbatch().repeat(10).batch(8)
    lines = evaluation.check_teacher(teacher, repeated, "scale", 3)
    assert lines[0] == "teacher: validation accuracy 0.0000 (chance 0.3333)" and len(lines) == 2
    assert lines[1].startswith("warning: the teacher is near chance on the validation images")
    # Distinct images as many: refused, as before.
    with pytest.raises(errors.ConfigError, match=r"label 0 is its class 2 for 10 of 10 images"):
        evaluation.check_teacher(*_rotated_labels(10), "scale", 3)


def test_one_answer_for_every_image_of_an_unbalanced_set_is_not_below_chance():
    # "Class 2" for every image, 3 of 60 of them: 0.05, far below 1/3, but as often right as
    # answers unrelated to the labels are on this set (3.0): warned of, not refused.
    teacher = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(3, kernel_initializer="zeros",
                                                   bias_initializer="ones")])  # fmt: skip
    teacher.layers[-1].bias.assign([0.0, 0.0, 1.0])
    labels = np.repeat([0, 2], [57, 3])
    distinct = np.zeros((60, 4, 4, 1), "float32")  # the check counts copies once
    distinct[:, 0, 0, 0] = np.arange(60) * 0.001  # (the teacher's kernel is zeros)
    images = tf.data.Dataset.from_tensor_slices((distinct, labels))
    lines = evaluation.check_teacher(teacher, images.batch(16), "scale", 3)
    assert lines[0] == "teacher: validation accuracy 0.0500 (chance 0.3333)"
    assert lines[1].startswith("warning: the teacher is near chance") and "below" not in lines[1]
    # A PyTorch teacher's Normalize(mean, std) is not guessed, but named with its flags.
    assert "--preprocessing=standardize --input_mean=MEAN --input_std=STD" in lines[1]
    standardized = evaluation.check_teacher(teacher, images.batch(16), "standardize", 3,
                                            input_mean=(0.5,), input_std=(0.25,))  # fmt: skip
    assert "--preprocessing=standardize" not in standardized[1]  # given already


def test_a_teacher_whose_batch_norm_statistics_lag_is_named_as_such():
    """A briefly trained keras.applications MobileNetV2 (BatchNormalization momentum 0.999)
    is at chance in inference mode and fine with batch statistics: the warning says so, where
    it blamed the class order or the pixel scaling, and the teacher is left as it was."""
    norm = keras.layers.BatchNormalization(momentum=0.999, center=False, scale=False)
    head = keras.layers.Dense(4)
    teacher = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.GlobalAveragePooling2D(),
                                norm, head])  # fmt: skip
    # Batch statistics make the brightnesses 0.1, 0.4, 0.6, 0.9 z = -1.37, -0.34, 0.34, 1.37,
    # which the head splits at -0.86, 0, 0.86; the moving mean 5 puts every image in class 0.
    head.set_weights([np.array([[0.0, 10, 20, 30]]), np.array([0.0, 8.6, 8.6, 0])])
    norm.moving_mean.assign([5.0])
    norm.trainable = False
    means = np.repeat([0.1, 0.4, 0.6, 0.9], 8).astype("float32")
    images = np.ones((32, 4, 4, 1), "float32") * means[:, None, None, None]
    batches = tf.data.Dataset.from_tensor_slices((images, np.repeat(np.arange(4), 8))).batch(32)
    lines = evaluation.check_teacher(teacher, batches, "scale", 4)
    assert lines[0] == "teacher: validation accuracy 0.2500 (chance 0.2500)"
    assert "(0.2500) but scores 1.0000 normalised with each batch's own" in lines[1]
    assert "(momentum 0.999, an average over about 1000 steps)" in lines[1]
    assert norm.moving_mean.numpy().tolist() == [5.0] and norm.trainable is False


def _rescaling_student(scale: float, offset: float = 0.0) -> keras.Model:
    """28×28×1 → (Resizing) → Rescaling(scale, offset) → conv → logits: takes raw pixels."""
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Resizing(28, 28)(inputs)  # weightless: the Rescaling is still its first
    h = keras.layers.Rescaling(scale, offset, name="own_rescale")(h)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(h))
    return keras.Model(inputs, keras.layers.Dense(10)(h), name="rescaler")


def test_a_student_that_rescales_raw_pixels_is_refused_under_scaled_preprocessing(tmp_path):
    # It saw pixels / 65025 and trained on them without an error (user audit); an untrained
    # student cannot be checked by its accuracy, as the teacher is.
    path = tmp_path / "student.keras"
    _rescaling_student(1 / 255).save(path)
    with pytest.raises(errors.ConfigError, match=r"student '.*student.keras' rescales its own "
                       r"input \(its layer 'own_rescale' multiplies by 0.00392157\).*feeds it "
                       r"pixels / 255 \(--preprocessing=scale.*--preprocessing=none"):  # fmt: skip
        experiment.run(SMOKE.with_values(student=str(path)), tmp_path / "run")
    assert not (tmp_path / "run" / "teacher").exists()  # refused before the teacher trained


def test_which_rescaling_takes_raw_pixels():
    from fitnets_tf.preprocessing import check_own_rescaling, raw_pixel_rescaling

    assert raw_pixel_rescaling(_rescaling_student(1 / 127.5, -1.0)).name == "own_rescale"
    assert raw_pixel_rescaling(_rescaling_student(2.0)) is None  # not a pixel scale
    inputs = keras.Input((4, 4, 1))
    late = keras.layers.Rescaling(1 / 255)(keras.layers.Conv2D(2, 1)(inputs))  # after weights
    assert raw_pixel_rescaling(keras.Model(inputs, late)) is None
    assert check_own_rescaling(_rescaling_student(1 / 255), "none", "student") is None  # right
    with pytest.raises(errors.ConfigError, match="contrast-normalised pixels"):
        check_own_rescaling(_rescaling_student(1 / 255), "gcn", "student")
    with pytest.raises(errors.ConfigError, match=r"\(pixels / 255 - mean\) / std.*standardize"):
        check_own_rescaling(_rescaling_student(1 / 255), "standardize", "student")


def test_a_student_fed_raw_pixels_without_rescaling_them_is_warned_of():
    # The teacher check's advice for a teacher that rescales its inputs, --preprocessing=none,
    # followed without the student's half: it trained on raw pixels, silently (user audit).
    from fitnets_tf.preprocessing import check_own_rescaling

    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Resizing(28, 28)(inputs)
    plain = keras.Model(inputs, keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(h)))
    assert check_own_rescaling(plain, "none", "student", "s.keras") == (
        "warning: the student 's.keras' takes raw pixels in [0, 255] (--preprocessing=none) "
        "straight into its layer 'fc': give it a first Rescaling(1/255) layer (the teacher's, "
        "if the teacher has one), or it trains on inputs 255 times larger than pixels / 255.")
    assert check_own_rescaling(plain, "scale", "student") is None  # fed pixels / 255
    normalised = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.BatchNormalization(),
                                   keras.layers.Flatten(), keras.layers.Dense(3)])  # fmt: skip
    assert check_own_rescaling(normalised, "none", "student") is None
    nested = keras.Sequential([keras.Input((28, 28, 1)), _rescaling_student(1 / 255)])
    assert check_own_rescaling(nested, "none", "student") is None  # its backbone rescales


def _normalising_student(images=None, *, first=None, **given) -> keras.Model:
    """28×28×1 → (``first``) → Normalization adapted on ``images`` (or given ``mean`` and
    ``variance``) → conv → logits."""
    norm = keras.layers.Normalization(name="own_norm", **given)
    if images is not None:
        norm.adapt(images)
    h = inputs = keras.Input((28, 28, 1))
    h = norm(first(h) if first else h)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(h))
    return keras.Model(inputs, keras.layers.Dense(10)(h), name="normaliser")


RAW = np.random.RandomState(0).randint(0, 256, (16, 28, 28, 1)).astype("float32")


def test_a_student_normalising_with_raw_pixel_statistics_is_refused_under_scaled_preprocessing(
    tmp_path,
):
    # Adapted on raw pixels (Keras' tutorial way), it normalised pixels / 255 with their
    # statistics: (x - 127) / 74 for x in [0, 1], all but constant images, trained on silently.
    path = tmp_path / "student.keras"
    _normalising_student(RAW).save(path)
    with pytest.raises(errors.ConfigError, match=r"student '.*student.keras' normalises its own "
                       r"input with raw pixels' statistics \(its Normalization layer 'own_norm' "
                       r"subtracts a mean of 12\d\.\d+; images in \[0, 1\] have a mean of at "
                       r"most 1\).*feeds it pixels / 255 \(--preprocessing=scale.*"
                       r"--preprocessing=none.*adapt the student's layer on the images as this run "
                       r"feeds them \(norm.adapt\(images / 255\)\)"):  # fmt: skip
        experiment.run(SMOKE.with_values(student=str(path)), tmp_path / "run")
    assert not (tmp_path / "run" / "teacher").exists()  # refused before the teacher trained


def test_which_normalization_takes_raw_pixels():
    from fitnets_tf.preprocessing import check_own_rescaling, raw_pixel_normalization

    assert raw_pixel_normalization(_normalising_student(RAW)).name == "own_norm"
    # Given as arguments (the ImageNet means in pixels), and after layers that only move or
    # resize pixels, as well.
    given = dict(mean=[123.7], variance=[58.4**2])
    assert raw_pixel_normalization(_normalising_student(**given)).name == "own_norm"
    flip = keras.layers.RandomFlip()
    assert raw_pixel_normalization(_normalising_student(RAW, first=flip)).name == "own_norm"
    # No false refusal: adapted on images / 255 (any mean of those is at most 1), an inverse
    # Normalization, or one after a layer that changes the values.
    assert raw_pixel_normalization(_normalising_student(RAW / 255)) is None
    assert raw_pixel_normalization(_normalising_student(**given, invert=True)) is None
    centred = keras.layers.Rescaling(2.0, -1.0)  # to [-1, 1]: not what the statistics were of
    assert raw_pixel_normalization(_normalising_student(RAW, first=centred)) is None
    check_own_rescaling(_normalising_student(RAW), "none", "student")  # raw pixels: right
    # Standardized images (torchvision's Normalize) are all but constant after it too: it was
    # left alone under --preprocessing=standardize. Adapted on them (means near 0), it is not.
    with pytest.raises(errors.ConfigError, match=r"subtracts a mean of 12\d\.\d+; standardized "
                       r"images have a mean of a few units at most\), but this run feeds it "
                       r"pixels standardized .*--preprocessing=standardize"):  # fmt: skip
        check_own_rescaling(_normalising_student(RAW), "standardize", "student")
    standardized = (RAW / 255 - RAW.mean() / 255) / (RAW.std() / 255)
    check_own_rescaling(_normalising_student(standardized), "standardize", "student")
    # Contrast-normalised images have no range to compare with (it depends on the image size
    # and the normalisation's axes): the run leaves such a layer to its user.
    check_own_rescaling(_normalising_student(RAW), "gcn", "student")


def test_preprocessing_none_feeds_the_raw_pixels():
    loaded = experiment.load_data(SMOKE.with_values(preprocessing="none"))
    images = np.concatenate([x for x, _ in loaded.validation])
    assert loaded.preprocessor.mode == "none" and images.max() > 1
    assert experiment.load_data(SMOKE).preprocessor.mode == "scale"


def test_preprocessing_standardize_feeds_both_models_normalize_s_output():
    # A PyTorch teacher trained behind Normalize(mean, std), exported without it, is fed
    # what it was trained on; the student sees the same images.
    config = SMOKE.with_values(preprocessing="standardize", input_mean=(0.25,), input_std=(0.5,))
    loaded = experiment.load_data(config)
    raw = experiment.load_data(SMOKE.with_values(preprocessing="none"))
    x, x_raw = (np.concatenate([x for x, _ in d.validation]) for d in (loaded, raw))
    np.testing.assert_allclose(x, (x_raw / 255 - 0.25) / 0.5, rtol=1e-5, atol=1e-5)
    assert config.fingerprint()["input_mean"] == [0.25]  # a run resumes only the same


def test_a_student_whose_batch_norm_lags_is_named_with_the_fix():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3)(inputs)
    h = keras.layers.BatchNormalization(momentum=0.99)(h)
    inner = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))
    outer = keras.Sequential([keras.Input((8, 8, 1)), inner, keras.layers.Dense(3)])  # nested
    history = {"hints": {"hint_loss": [3.0]}, "kd": {"accuracy": [0.5, 0.97]}}
    warning = evaluation.lagging_batch_norm("kd", outer, history, 0.33)
    assert "kd scores 0.330" in warning and "0.970 on its last training batches" in warning
    assert "about 100 steps (momentum 0.99)" in warning and "lower momentum" in warning
    assert evaluation.lagging_batch_norm("kd", outer, history, 0.80) is None  # a usual gap
    assert evaluation.lagging_batch_norm("kd", outer, None, 0.33) is None  # nothing to compare
    plain = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    assert evaluation.lagging_batch_norm("kd", plain, history, 0.33) is None  # no BatchNorm


def test_a_student_that_learned_nothing_is_named_with_the_flag_to_lower():
    # A MobileNetV2 student at SGD 0.1 diverged in its first epoch (cross-entropy 9.9, 4
    # classes): chance on the test and training batches, and no warning at all.
    plain = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(4)])
    diverged = {"hints": {"hint_loss": [3.0]}, "kd": {"accuracy": [0.26, 0.24],
                                                      "ce_loss": [10.7, 9.9]}}  # fmt: skip
    assert evaluation.training_warnings("fitnet", plain, diverged, 0.25, 4) == [
        "warning: fitnet ends near chance: test accuracy 0.250, 0.240 on its last training "
        "batches (chance 0.250): it learned nothing. Its cross-entropy on the labels, 9.9, is "
        "over twice a uniform guess's (1.39): training diverged. Lower --learning_rate (or use "
        "--optimizer=adam), and check its inputs."
    ]
    # Stalled at a uniform guess's cross-entropy: a short run at too low a rate ends there (an
    # AdamW 0.001 student of 22 steps, 1.589 against 1.609, learned at 0.01), so "Lower" alone
    # was the wrong advice; both directions and a longer run are named.
    stalled = {"scratch": {"accuracy": [0.3], "loss": [1.38]}}
    assert evaluation.not_learned("scratch", stalled, 0.3, 4).endswith(
        "it learned nothing. Its cross-entropy on the labels, 1.38, is a uniform guess's (1.39): "
        "it barely moved, as too few steps or too low a learning rate leave it, and too high a "
        "rate can. Try --learning_rate ten times higher and ten times lower (or "
        "--optimizer=adam), or more epochs, and check its inputs.")
    hints_only = {"guided_labels": {"accuracy": [0.2], "loss": [9.0]}}  # a stage 1's rate named
    assert "Lower --hints_learning_rate" in evaluation.not_learned("stagewise_labels", hints_only,
                                                                  0.25, 4)  # fmt: skip
    learned = {"kd": {"accuracy": [0.9], "ce_loss": [0.3]}}
    assert evaluation.not_learned("kd", learned, 0.25, 4) is None  # lagging_batch_norm's case
    assert evaluation.not_learned("kd", diverged, 0.6, 4) is None  # it did learn
    assert evaluation.not_learned("teacher", None, 0.25, 4) is None  # nothing to tell from
    # Two classes: "near chance" was under twice chance, 1.0, so a student right on 0.9 of the
    # test and training images "learned nothing". Halfway from chance to 1 is near it there.
    binary = {"kd": {"accuracy": [0.9], "ce_loss": [0.3]}}
    assert evaluation.not_learned("kd", binary, 0.9, 2) is None
    assert "ends near chance" in evaluation.not_learned("kd", {"kd": {"accuracy": [0.6]}}, 0.6, 2)


def _conv_teacher(path, seed: int = 0) -> str:
    """A small trained-teacher file for the synthetic data (28×28×1, 10 classes), functional
    so that hints=auto finds its middle layer; another ``seed``, other weights."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="t_conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, name="t_pool1")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="t_conv2")(h)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
    keras.Model(inputs, outputs).save(path)
    return str(path)


def _student_file(path, width: int = 8) -> str:
    """A small student file for the synthetic data; another ``width``, a wider last conv."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="s_conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, name="s_pool1")(h)
    h = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="s_conv2")(h)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
    keras.Model(inputs, outputs, name="own_student").save(path)
    return str(path)


def test_a_student_file_changed_between_stages_is_refused(tmp_path):
    # Widened in place after stage 1, same layer names: the restore of stage 1's weights into
    # it failed deep in Keras ("weight shape (3, 3, 8, 16) is not compatible").
    path = _student_file(tmp_path / "student.keras")
    config = SMOKE.with_values(modes=("fitnet",), student=path, hints=("t_conv2:s_conv2",),
                               teacher_path=_conv_teacher(tmp_path / "teacher.keras"),
                               hints_epochs=1)  # fmt: skip
    run = tmp_path / "run"
    experiment.run(config.with_values(stages=("stage1",)), run, log=lambda m: None)
    then = io.file_sha256(path)
    _student_file(path, width=16)
    with pytest.raises(errors.WorkdirError, match=rf"The student file '{path}' changed since the "
                       rf"run in .* started \(sha256 {then} then, {io.file_sha256(path)} now\).*"
                       r"Restore the file it started with, or start a new --workdir"):  # fmt: skip
        experiment.run(config.with_values(stages=("stage2",)), run, log=lambda m: None)
    # A run from before the sha256 was recorded resumes, and records the file as it is now
    # (its stage 2 starts from stage 1's student file, which Keras loads whole).
    _student_file(path)
    state = resume.RunState(run, config.fingerprint())
    del state.data[student_file.KEY]
    state.save()
    experiment.run(config.with_values(stages=("stage2",)), run, log=lambda m: None)
    state = json.loads((run / "run_state.json").read_text())
    assert state[student_file.KEY] == io.file_sha256(path) and state["stages"]["fitnet/kd"]["done"]


def test_a_model_refusing_the_images_size_is_told_where_the_size_came_from(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 1))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    keras.Model(inputs, keras.layers.Dense(10)(h)).save(tmp_path / "teacher.keras")
    config = SMOKE.with_values(teacher_path=str(tmp_path / "teacher.keras"))
    with pytest.raises(errors.DataError, match=r"teacher takes images of shape 32x32x1 but the "
                       r"data's are 28x28x1.* The data's size, 28x28, is the dataset's own "
                       r"size\.$"):  # fmt: skip
        experiment.run(config, tmp_path / "run", log=lambda m: None)


def test_a_run_says_what_it_decided_for_the_data_and_the_models_once(tmp_path, capsys):
    # The data summary, the teacher's softmax left out (once, not once per mode) and each
    # pair's regressor: printed through the run's log (the note through notes), and recorded.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="t_conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, name="t_pool1")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h),
                name="soft_teacher").save(tmp_path / "teacher.keras")  # fmt: skip
    config = SMOKE.with_values(modes=("fitnet", "stagewise_labels"), hints_epochs=1,
                               teacher_path=str(tmp_path / "teacher.keras"),
                               hints=("t_pool1:conv1",), stages=("stage1",))  # fmt: skip
    logs = []
    experiment.run(config, tmp_path / "run", log=logs.append)
    assert logs[0] == ("data: 10 classes; 128 train, 128 validation, 128 test images of "
                       "28x28x1 (size: the dataset's own size).")  # fmt: skip
    assert "regressor t_pool1:conv1: Conv2D, 11x11 kernel, 8 channels, relu" in logs
    assert capsys.readouterr().out.count("'soft_teacher' ends in a softmax") == 1
    pair = json.loads((tmp_path / "run" / "hints.json").read_text())["pairs"][0]
    assert pair["regressor"] == {"layer": "Conv2D", "kernel_size": [11, 11], "channels": 8,
                                 "activation": "relu"}  # fmt: skip
    recorded = json.loads((tmp_path / "run" / "data.json").read_text())
    assert recorded["formatting"] == {"size_from": "the dataset's own size"}


def test_a_run_with_the_codes_regressor_bound_records_it(tmp_path):
    config = SMOKE.with_values(modes=("fitnet",), hints_epochs=1, stages=("teacher", "stage1"),
                               regressor_max_norm=0.9)  # fmt: skip
    logs = []
    experiment.run(config, tmp_path, log=logs.append)
    assert ("regressor pool2:pool4: MaxoutConv2D, 1x1 kernel, 48 channels, maxout (2 pieces), "
            "kernel norms <= 0.9") in logs  # fmt: skip
    pair = json.loads((tmp_path / "hints.json").read_text())["pairs"][0]
    assert pair["regressor"]["max_norm"] == 0.9


def test_a_start_refused_before_training_leaves_the_run_free_to_change_its_data(tmp_path):
    # Refused once its data was recorded (here: models that do not fit), the fixed command,
    # on other data, was refused in turn as "not what the run started with".
    bad = SMOKE.with_values(modes=("fitnet",), hint_layer="conv1", guided_layer="pool2")
    with pytest.raises(errors.HintShapeError, match="hint map is larger"):
        experiment.run(bad, tmp_path)
    record = tmp_path / "data.json"
    assert json.loads(record.read_text())["examples"]["test"] == 128
    experiment.run(SMOKE.with_values(limit=64), tmp_path, log=lambda m: None)
    assert json.loads(record.read_text())["examples"]["test"] == 64
    # From its first stage on, the run is bound to that data.
    with pytest.raises(errors.DataError, match="not what the run in .* started with"):
        builders.load_run_data(SMOKE, record, started=True)


def test_stage_two_without_stage_one_is_refused_before_any_mode_trains(tmp_path, fit_calls):
    # --stages=stage2 in a new --workdir: mode kd trained in full before fitnet found no
    # stage-1 student.
    config = SMOKE.with_values(
        modes=("kd", "fitnet", "stagewise_labels"), stages=("stage2",), hints=("auto",),
        teacher_path=_conv_teacher(tmp_path / "teacher.keras"),
    )  # fmt: skip
    with pytest.raises(errors.ConfigError, match=r"Stage 'hints' of mode 'fitnet' is not run now"
                       r".*; stage 'guided_labels' of mode 'stagewise_labels' is not run now.*"
                       r"run those stages first in this --workdir"):  # fmt: skip
        experiment.run(config, tmp_path / "run")
    assert fit_calls == []
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]  # nothing trained


def test_a_teacher_file_changed_between_stages_is_refused(tmp_path):
    # Retrained and saved over in place after stage 1: stage 2 learned from the other teacher.
    path = _conv_teacher(tmp_path / "teacher.keras")
    config = SMOKE.with_values(modes=("fitnet",), teacher_path=path, hints=("auto",),
                               hints_epochs=1)  # fmt: skip
    run = tmp_path / "run"
    experiment.run(config.with_values(stages=("stage1",)), run, log=lambda m: None)
    then = io.file_sha256(path)
    _conv_teacher(path, seed=1)
    logs = []
    with pytest.raises(errors.WorkdirError, match=rf"The teacher file '{path}' changed since the "
                       rf"run in .* started \(sha256 {then} then, {io.file_sha256(path)} now\).*"
                       r"Restore the file it started with, or start a new --workdir"):  # fmt: skip
        experiment.run(config.with_values(stages=("stage2",)), run, log=logs.append)
    # The stages done, not those asked for now (stage 2: "none").
    assert logs == [f"resuming the run in {run}; stages done: fitnet/hints"]
    # A run from before the sha256 was recorded resumes, and records the file as it is now.
    state = resume.RunState(run, config.fingerprint())
    del state.data[teacher_file.KEY]
    state.save()
    experiment.run(config.with_values(stages=("stage2",)), run, log=lambda m: None)
    state = json.loads((run / "run_state.json").read_text())
    assert state[teacher_file.KEY] == io.file_sha256(path) and state["stages"]["fitnet/kd"]["done"]


def test_test_accuracy_takes_labels_of_shape_batch_by_one():
    # keras.datasets' labels are (N, 1): compared with (N,) predictions they broadcast to an
    # N x N matrix: an "accuracy" above 1.
    teacher, images = _relabelled_teacher(list(range(4)), right=0.7, per_class=4, classes=4)
    flat = evaluation.test_accuracy(teacher, images)
    column = images.map(lambda x, y: (x, tf.reshape(y, (-1, 1))))
    assert evaluation.test_accuracy(teacher, column) == flat == 0.6875


def test_the_models_listed_take_the_images_a_run_would_give_them():
    # --list_layers built the models from the built-in dataset's spec: 28x28x1 under
    # --channels=3, where a run builds them for 28x28x3; and took an --image_size a run refuses.
    config = config_lib.ExperimentConfig().with_values(
        dataset="synthetic", teacher="mnist_teacher", student="mnist_fitnet", channels=3)
    teacher, student = builders.models_of(config)
    assert teacher.input_shape == student.input_shape == (None, 28, 28, 3)
    with pytest.raises(errors.ConfigError, match="`image_size` resizes the user's data only; "
                                                 "'synthetic' is 28x28"):  # fmt: skip
        builders.dataset_shape(config.with_values(image_size=(32, 32)))


def test_a_teacher_the_run_trained_on_these_images_is_not_tried_on_other_scalings():
    # A teacher trained one epoch in the run (the slow suite's full-disk case) was refused as
    # right more often on raw pixels: it was trained on these very images, as the run feeds them.
    teacher = _normalized_brightness_teacher()
    images = _brightness_batches(1.0, rounds=4)
    lines = evaluation.check_teacher(teacher, images, "scale", 4, other_scalings=False)
    assert lines == ["teacher: validation accuracy 0.5000 (chance 0.2500)"]


def _mean_image_teacher(path) -> str:
    """A teacher trained on pixels / 255 of the synthetic data: the nearest of the classes'
    mean images wins. Saved to ``path``."""
    images, labels = data.make_synthetic(512, seed=1)
    means = np.stack([images[labels == k].mean(axis=0) / 255 for k in range(10)])
    means = means.reshape(10, -1)
    head = keras.layers.Dense(10)
    teacher = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), head])
    head.set_weights([means.T, -0.5 * np.sum(means**2, axis=1)])
    teacher.save(path)
    return str(path)


# Its refusal when fed the synthetic images standardised by --input_std=63.75.
_RAW_STD_REFUSED = (r"fed as this run feeds them \(pixels / 255 standardised by --preprocessing="
                    r"standardize --input_mean=0.5 --input_std=63.75\), but on 1.0000 of the "
                    r"same images as pixels / 255: .* Run with --preprocessing=scale,")


def test_a_standardize_run_given_constants_its_teacher_was_not_trained_on_is_refused(tmp_path):
    """A teacher trained on pixels / 255 given a --preprocessing=standardize run whose
    --input_std is of raw pixels (63.75, a quarter of 255) sees images of about 0 and says one
    class: it was only warned of as near chance, and taught its mistakes. The run names the
    flag that feeds it what it knows."""
    run = SMOKE.with_values(teacher_path=_mean_image_teacher(tmp_path / "teacher.keras"),
                            preprocessing="standardize", input_mean=(0.5,), input_std=(63.75,))
    with pytest.raises(errors.ConfigError, match=_RAW_STD_REFUSED):
        experiment.run(run, tmp_path / "run", log=lambda line: None)


def test_a_kd_search_checks_a_standardize_runs_teacher_with_the_runs_constants(tmp_path):
    from fitnets_tf.search import session

    path = _mean_image_teacher(tmp_path / "teacher.keras")
    config = SMOKE.with_values(teacher_path=path, preprocessing="standardize",
                               input_mean=(0.5,), input_std=(63.75,))  # fmt: skip
    record = {"teacher_path": path, "student_path": None}
    with pytest.raises(errors.ConfigError, match=_RAW_STD_REFUSED):
        session._check_models(config, record, experiment.load_data(config), print)
