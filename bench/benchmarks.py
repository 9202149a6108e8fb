"""The six benchmarks of bench/README.md; each returns a JSON-able dict.

Compiled train steps are timed through the model's own ``train_function`` (what ``fit`` runs
each step) fed by an iterator over one in-memory batch repeated, after a short ``fit`` has
traced it and built every metric. Each timed call runs ``steps`` steps and then reads a loss
back to the host, so the work has finished when the clock stops.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from bench import timing
from fitnets_tf import data, losses, models, teacher_cache
from fitnets_tf.distiller import Distiller, make_hint_path
from fitnets_tf.stages import Hyperparameters

HPARAMS = Hyperparameters()  # RMSProp 0.005, rho 0.9, τ = 3, λ = 4: the paper's CIFAR values
NUM_CLASSES = 10

# name: (teacher, student, input shape, batch size)
PAIRS = {
    "mnist": ("mnist_teacher", "mnist_fitnet", (28, 28, 1), 128),
    "cifar": ("cifar_teacher", "fitnet1", (32, 32, 3), 64),
}
# Table 5 of the paper: the teacher's inference time over each FitNet's (GPU).
PAPER_SPEEDUP = {"fitnet1": 13.36, "fitnet2": 4.64, "fitnet3": 1.37, "fitnet4": 1.52}


# ----------------------------------------------------------------------------- builders


def build_pair(pair: str, seed: int = 0):
    teacher_name, student_name, shape, _ = PAIRS[pair]
    teacher = models.build(teacher_name, shape, NUM_CLASSES, seed=seed)
    student = models.build(student_name, shape, NUM_CLASSES, seed=seed + 1)
    return teacher, student


def hint_layers(pair: str) -> tuple[str, str]:
    return models.hint_layer_name(PAIRS[pair][0]), models.guided_layer_name(PAIRS[pair][1])


def fixed_batch(pair: str, seed: int = 0):
    _, _, shape, batch = PAIRS[pair]
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (batch, *shape)).astype("float32")
    y = (np.arange(batch) % NUM_CLASSES).astype("int32")
    return tf.constant(x), tf.constant(y)


def repeated(*tensors) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensors(tensors).repeat()


def kd_distiller(teacher, student, *, metrics=("accuracy",), **compile_kwargs) -> Distiller:
    # The benchmarks' teachers are untrained, fed random images: nothing for fit's check of
    # its teacher to find, and no step of theirs is timed.
    distiller = Distiller(teacher, student, temperature=HPARAMS.temperature,
                          kd_lambda=HPARAMS.lambda_start, check_teacher=False)
    distiller.compile(
        HPARAMS.optimizer(), phase="kd", metrics=list(metrics) or None, **compile_kwargs
    )
    return distiller


def keras_distiller(teacher, student):
    """Keras' own distiller with the same soft term (τ = 3) and a labels term."""
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=keras.distillation.LogitsDistillation(temperature=HPARAMS.temperature),
        student_loss_weight=0.5,
    )
    distiller.compile(
        HPARAMS.optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return distiller


def plain_student(student, **compile_kwargs) -> keras.Model:
    """The student alone on the labels: same optimizer and metric as the KD phase."""
    student.compile(
        HPARAMS.optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **compile_kwargs,
    )
    return student


# ----------------------------------------------------------------------------- runners


def train_runner(model: keras.Model, dataset: tf.data.Dataset, steps: int):
    """A callable running ``steps`` compiled train steps of ``model`` on ``dataset`` (repeated)."""
    model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)  # traces and builds everything
    iterator = iter(dataset)

    def run():
        for _ in range(steps):
            logs = model.train_function(iterator)
        float(logs["loss"])

    return run


def forward_runner(model: keras.Model, x, steps: int):
    """A callable running ``steps`` inference calls (``training=False``) in a tf.function."""
    forward = tf.function(lambda images: model(images, training=False))

    def run():
        for _ in range(steps):
            out = forward(x)
        out.numpy()

    return run


def fused_kd_runner(teacher, student, x, y, steps: int, *, trackers: bool):
    """A hand-written KD step: the Distiller's maths with none of Keras' step machinery.

    With ``trackers`` it also updates the Distiller's five Mean trackers and accuracy, to
    price them separately.
    """
    optimizer = HPARAMS.optimizer()
    variables = student.trainable_variables
    optimizer.build(variables)
    temperature = keras.Variable(HPARAMS.temperature, trainable=False)
    kd_lambda = keras.Variable(HPARAMS.lambda_start, trainable=False)
    means = [keras.metrics.Mean() for _ in range(5)]
    accuracy = keras.metrics.SparseCategoricalAccuracy()

    @tf.function
    def step(images, labels):
        teacher_logits = teacher(images, training=False)
        with tf.GradientTape() as tape:
            logits = student(images, training=True)
            ce = ops.mean(losses.cross_entropy(labels, logits))
            kd = ops.mean(losses.kd_loss(teacher_logits, logits, temperature))
            loss = ce + kd_lambda * kd
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        if trackers:
            for mean, value in zip(means, (loss, ce, kd, kd_lambda, temperature), strict=True):
                mean.update_state(value)
            accuracy.update_state(labels, logits)
        return loss

    def run():
        for _ in range(steps):
            loss = step(x, y)
        loss.numpy()

    return run


def hint_baselines(teacher, student, pair: str, x, steps: int):
    """Stage 1's two halves alone: the guided part + regressor trained towards a fixed hint,
    and the teacher up to its hint layer."""
    hint_layer, guided_layer = hint_layers(pair)
    teacher_hint, student_guided, regressor = make_hint_path(
        teacher, student, hint_layer, guided_layer
    )
    guided = keras.Model(student_guided.inputs, regressor(student_guided.outputs[0]))
    guided.compile(HPARAMS.optimizer(), loss=lambda h, r: ops.mean(losses.hint_loss(h, r)))
    target = teacher_hint(x, training=False)
    return (
        train_runner(guided, repeated(x, target), steps),
        forward_runner(teacher_hint, x, steps),
    )


# ----------------------------------------------------------------------------- benchmarks


def step_overhead(pair: str, *, repeats: int, steps: int) -> dict:
    """(1) and (2): KD and hint steps against their parts, Keras' Distiller, a fused step."""
    teacher, student = build_pair(pair)
    x, y = fixed_batch(pair)
    labelled = repeated(x, y)
    hint_layer, guided_layer = hint_layers(pair)
    hints = Distiller(teacher, student, hint_layer=hint_layer, guided_layer=guided_layer,
                      check_teacher=False)
    hints.compile(HPARAMS.optimizer(), phase="hints")
    guided_step, teacher_hint_forward = hint_baselines(teacher, student, pair, x, steps)
    candidates = {
        "kd": train_runner(kd_distiller(teacher, student), labelled, steps),
        "kd_no_metrics": train_runner(kd_distiller(teacher, student, metrics=()), labelled, steps),
        "kd_cached_logits": train_runner(
            kd_distiller(teacher, student),
            repeated({"images": x, "teacher_logits": teacher(x, training=False)}, y),
            steps,
        ),
        "keras_distiller": train_runner(keras_distiller(teacher, student), labelled, steps),
        "fused_kd": fused_kd_runner(teacher, student, x, y, steps, trackers=False),
        "fused_kd_trackers": fused_kd_runner(teacher, student, x, y, steps, trackers=True),
        "student": train_runner(plain_student(student), labelled, steps),
        "teacher_forward": forward_runner(teacher, x, steps),
        "hints": train_runner(hints, labelled, steps),
        "guided_step": guided_step,
        "teacher_hint_forward": teacher_hint_forward,
    }
    times = timing.interleaved(candidates, repeats=repeats)
    kd_parts = ("student", "teacher_forward")
    return {
        "batch_size": PAIRS[pair][3],
        "ms_per_step": timing.summary(times, per_call=steps),
        "ratios": {
            "kd_overhead": timing.ratio(times, "kd", *kd_parts),
            "hints_overhead": timing.ratio(times, "hints", "guided_step", "teacher_hint_forward"),
            "kd_no_metrics_overhead": timing.ratio(times, "kd_no_metrics", *kd_parts),
            "fused_kd_overhead": timing.ratio(times, "fused_kd", *kd_parts),
            "fused_kd_trackers_overhead": timing.ratio(times, "fused_kd_trackers", *kd_parts),
            "kd_cached_over_student": timing.ratio(times, "kd_cached_logits", "student"),
            # > 1: ours is faster (throughput ratio = inverse time ratio).
            "ours_over_keras_throughput": timing.ratio(times, "keras_distiller", "kd"),
        },
    }


def caching(*, examples: int, repeats: int, tmp_dir: str) -> dict:
    """(3) KD and hint epochs from cached teacher outputs against a plain student epoch.

    Fashion-MNIST. The caches: ``cache_teacher_logits`` + ``training_batches`` in memory and
    streamed from disk, and ``cache_datasets`` (what ``--cache_teacher`` uses: the pipeline's
    own batch order), with logits only and with the hint too.
    """
    batch = PAIRS["mnist"][3]
    datasets = data.load("fashion_mnist", batch_size=batch, limit=examples, validation_size=0)
    teacher, student = build_pair("mnist")
    results = {"examples": examples, "batch_size": batch}
    for where, path in (("memory", None), ("disk", f"{tmp_dir}/teacher_cache")):
        start = time.perf_counter()
        cached = teacher_cache.cache_teacher_logits(
            teacher, datasets.train, augmenting=False, path=path
        )
        results[f"cache_build_s_{where}"] = time.perf_counter() - start
        buffer = None if path is None else 10_000
        results[f"_{where}"] = teacher_cache.training_batches(
            cached, batch_size=batch, seed=0, shuffle_buffer=buffer
        )
    start = time.perf_counter()
    in_order, _ = teacher_cache.cache_datasets(teacher, datasets)
    results["cache_build_s_in_order"] = time.perf_counter() - start
    hint_layer, guided_layer = hint_layers("mnist")
    with_hint, _ = teacher_cache.cache_datasets(teacher, datasets, hint_layer=hint_layer)

    def hints_distiller():
        distiller = Distiller(teacher, student, hint_layer=hint_layer,
                              guided_layer=guided_layer, check_teacher=False)
        distiller.compile(HPARAMS.optimizer(), phase="hints")
        return distiller

    epochs = {
        "student_epoch": (plain_student(student), datasets.train),
        "kd_live_epoch": (kd_distiller(teacher, student), datasets.train),
        "kd_cached_memory_epoch": (kd_distiller(teacher, student), results.pop("_memory")),
        "kd_cached_disk_epoch": (kd_distiller(teacher, student), results.pop("_disk")),
        "kd_cached_in_order_epoch": (kd_distiller(teacher, student), in_order),
        "hints_live_epoch": (hints_distiller(), datasets.train),
        "hints_cached_epoch": (hints_distiller(), with_hint),
    }
    candidates = {
        name: (lambda m=model, d=ds: m.fit(d, epochs=1, verbose=0, shuffle=False))
        for name, (model, ds) in epochs.items()
    }
    times = timing.interleaved(candidates, repeats=repeats)
    results["s_per_epoch"] = {k: v["ms"] / 1000 for k, v in timing.summary(times).items()}
    results["ratios"] = {
        "kd_cached_memory_over_student": timing.ratio(times, "kd_cached_memory_epoch", "student_epoch"),
        "kd_cached_disk_over_student": timing.ratio(times, "kd_cached_disk_epoch", "student_epoch"),
        "kd_cached_in_order_over_student": timing.ratio(times, "kd_cached_in_order_epoch", "student_epoch"),
        "kd_live_over_student": timing.ratio(times, "kd_live_epoch", "student_epoch"),
        "hints_cached_over_live": timing.ratio(times, "hints_cached_epoch", "hints_live_epoch"),
    }  # fmt: skip
    return results


def inference(*, repeats: int, batch_sizes=(1, 128)) -> dict:
    """(4) Teacher vs FitNet 1-4 latency and throughput (CIFAR shapes)."""
    names = ("cifar_teacher", "fitnet1", "fitnet2", "fitnet3", "fitnet4")
    nets = {name: models.build(name, (32, 32, 3), NUM_CLASSES, seed=0) for name in names}
    results = {
        "multiplications_M": {n: models.count_multiplications(m) / 1e6 for n, m in nets.items()},
        "paper_speedup": PAPER_SPEEDUP,
    }
    rng = np.random.default_rng(0)
    for batch in batch_sizes:
        x = tf.constant(rng.uniform(0.0, 1.0, (batch, 32, 32, 3)).astype("float32"))
        calls = 5 if batch == 1 else 1  # batch 1 is fast: several calls per timing
        candidates = {name: forward_runner(m, x, calls) for name, m in nets.items()}
        times = timing.interleaved(candidates, repeats=repeats, warmup=2)
        summary = timing.summary(times, per_call=calls)
        results[f"batch_{batch}"] = {
            "ms_per_batch": summary,
            "images_per_second": {n: 1000.0 * batch / s["ms"] for n, s in summary.items()},
            "speedup": {n: timing.ratio(times, "cifar_teacher", n) for n in names[1:]},
        }
    return results


def xla_and_mixed_precision(pair: str, *, repeats: int, steps: int) -> dict:
    """(5) jit_compile and mixed_float16 against the float32, non-XLA KD step."""
    x, y = fixed_batch(pair)
    labelled = repeated(x, y)
    teacher, student = build_pair(pair)
    candidates = {
        "kd_float32": train_runner(kd_distiller(teacher, student), labelled, steps),
        "kd_xla": train_runner(kd_distiller(teacher, student, jit_compile=True), labelled, steps),
        "teacher_forward": forward_runner(teacher, x, steps),
        "teacher_forward_xla": _xla_forward_runner(teacher, x, steps),
    }
    errors = {}
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed_teacher, mixed_student = build_pair(pair)
        candidates["kd_mixed_float16"] = train_runner(
            kd_distiller(mixed_teacher, mixed_student), labelled, steps
        )
    except Exception as err:  # reported, not fatal: the other numbers still stand
        errors["kd_mixed_float16"] = f"{type(err).__name__}: {err}"[:300]
    finally:
        keras.config.set_dtype_policy("float32")
    times = timing.interleaved(candidates, repeats=repeats)
    ratios = {
        "kd_xla_over_float32": timing.ratio(times, "kd_xla", "kd_float32"),
        "teacher_forward_xla_over_plain": timing.ratio(
            times, "teacher_forward_xla", "teacher_forward"
        ),
    }
    if "kd_mixed_float16" in times:
        ratios["kd_mixed_float16_over_float32"] = timing.ratio(
            times, "kd_mixed_float16", "kd_float32"
        )
    return {
        "ms_per_step": timing.summary(times, per_call=steps),
        "ratios": ratios,
        "errors": errors,
    }


def _xla_forward_runner(model, x, steps):
    forward = tf.function(lambda images: model(images, training=False), jit_compile=True)

    def run():
        for _ in range(steps):
            out = forward(x)
        out.numpy()

    return run


def input_pipeline(*, examples: int, repeats: int, steps: int) -> dict:
    """(6) The KD step fed by the real Fashion-MNIST pipeline vs one batch held in memory."""
    batch = PAIRS["mnist"][3]
    datasets = data.load("fashion_mnist", batch_size=batch, limit=examples, validation_size=0)
    real = datasets.train.repeat()
    x, y = next(iter(datasets.train))
    teacher, student = build_pair("mnist")
    pipeline = iter(real)

    def pipeline_alone():
        for _ in range(steps):
            images, _ = next(pipeline)
        images.numpy()

    candidates = {
        "kd_synthetic_source": train_runner(kd_distiller(teacher, student), repeated(x, y), steps),
        "kd_real_pipeline": train_runner(kd_distiller(teacher, student), real, steps),
        "pipeline_alone": pipeline_alone,
    }
    times = timing.interleaved(candidates, repeats=repeats)
    summary = timing.summary(times, per_call=steps)
    return {
        "examples": examples,
        "batch_size": batch,
        "steps_per_second": {n: 1000.0 / s["ms"] for n, s in summary.items()},
        "ratios": {
            "kd_real_over_synthetic_time": timing.ratio(
                times, "kd_real_pipeline", "kd_synthetic_source"
            ),
            "pipeline_batches_per_kd_step": timing.ratio(
                times, "kd_synthetic_source", "pipeline_alone"
            ),
        },
    }
