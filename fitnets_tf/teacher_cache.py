"""Precomputed teacher logits for stage 2, so a KD epoch costs about a plain student epoch.

The teacher is frozen and always run with ``training=False``, so on a deterministic input
pipeline its logits for an example never change: computing them once and reading them back
removes the teacher's forward pass (for the paper's pairs, as much compute as the student's
whole training step) from every epoch. The :class:`~fitnets_tf.Distiller` takes them in
phase ``"kd"`` as ``{"images": x, "teacher_logits": t}``.

Two choices matter for correctness:

* **Augmentation.** A random crop or flip changes the image each epoch, and with it the
  teacher's output, so an exact cache needs un-augmented data (``--cache_teacher=auto``
  caches only then). With ``--kd_targets=uncropped``, a run with augmentation caches the logits of
  each training image *and of its mirror image*: every augmented view gets those of the way
  it was flipped, computed on the uncropped image. A flip changes what a teacher sees; a shift
  of a few pixels barely does (a teacher trained on shifts answers alike), and the KD step
  then costs a plain student step instead of a student step plus a teacher forward (10× the
  student's multiplications in the default experiment). Hints are maps of the image, so they
  are never cached under augmentation: stage 1 computes them live.
* **Images and logits travel together.** The cache stores ``(image, logits, label)`` per
  example, zipped *before* any shuffling. Zipping a reshuffled image pipeline with a separately
  stored logits file would pair each image with another example's targets. The cache is built
  in one pass (any order: it is stored with the images), then shuffled and batched by
  :func:`training_batches` every epoch.

For the experiment runner, :func:`cache_datasets` keeps the cache beside the in-memory training
split of :func:`fitnets_tf.data.load` and batches it in that pipeline's ``(seed, epoch)`` order,
so a run with cached outputs sees the same batches as one without, and resumes exactly. It can
also cache the hint (stage 1's target), or the hints of several pairs, as a tuple in pair order.

Memory: the images are in memory already (``data.load(cache=True)``); the outputs add to them
(logits of 50K examples x 10 classes: 2 MB; of ImageNet's 1.28M x 1000: 5 GB, twice that with
the mirror images'). :func:`cache_datasets` keeps them in memory up to ``memory_budget`` bytes
(``--cache_memory_gb``; :func:`default_memory_gb`); above it, it writes them to ``directory``
in checksummed shards (:mod:`fitnets_tf.teacher_shards`) and gathers each batch's rows from
there, in the same ``(seed, epoch)`` order and with the same numbers: the teacher is run on the
same batches of images either way. A resumed run reuses the shards. The validation split's
outputs stay in memory (a held-out split is small). :func:`cache_teacher_logits` (a cache
stored with its images, for a library user's own pipeline) takes ``path`` instead: written
once with ``tf.data.Dataset.save``, streamed back through a bounded shuffle buffer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from fitnets_tf import data as data_lib
from fitnets_tf import teacher_shards
from fitnets_tf.models.logits import for_distilling
from fitnets_tf.models.nesting import flattened, layer_output
from fitnets_tf.models.onnx_model import logits_with_hints
from fitnets_tf.step_inputs import CACHED_HINT, CACHED_LOGITS, IMAGES

# The hint(s) are cached up to this size (in memory, or on disk above the memory budget);
# above it stage 1 computes them live.
MAX_CACHED_HINT_BYTES = 2 * 2**30
# Images per teacher call: the disk cache's, so that both caches hold the same numbers.
_TEACHER_BATCH = teacher_shards.TEACHER_BATCH

AUGMENTATION_MESSAGE = (
    "Refusing to cache teacher outputs while augmentation is on: teacher outputs depend on "
    "the random crop/flip of each epoch, so caching would train against stale targets. Turn "
    "off --augment or teacher caching, or ask for the logits of the uncropped images and their "
    "mirror images with --kd_targets=uncropped."
)


def cache_teacher_logits(
    teacher: keras.Model,
    examples: tf.data.Dataset,
    *,
    augmenting: bool,
    path: str | os.PathLike | None = None,
) -> tf.data.Dataset:
    """Runs ``teacher`` once over ``examples`` and returns the examples with its logits.

    Args:
        teacher: the frozen teacher; called with ``training=False``. Its logits are read as
            the Distiller reads them (:func:`outputs_function`): a final softmax left out.
        examples: a finite dataset of **batches** ``(images, labels)``, produced without random
            augmentation (its order does not matter: images are stored with their logits).
        augmenting: whether ``examples`` is randomly augmented; ``True`` raises, see
            :data:`AUGMENTATION_MESSAGE`.
        path: directory to write the cache to (``tf.data.Dataset.save``) and stream it back
            from, for datasets that should not sit in memory; ``None`` keeps it in memory.
            An existing directory is overwritten.

    Returns:
        An **unbatched** dataset of ``({"images": x, "teacher_logits": t}, y)``, one element
        per example, in the order ``examples`` produced them; batch it with
        :func:`training_batches` (shuffled) or ``.batch()`` (evaluation).

    Raises:
        ValueError: if ``augmenting`` is true.
    """
    if augmenting:
        raise ValueError(AUGMENTATION_MESSAGE)
    outputs_of = outputs_function(teacher)

    def logits_of(images):
        return outputs_of(images)[CACHED_LOGITS]

    if path is None:
        images, logits, labels = [], [], []
        for x, y in examples:
            images.append(x.numpy())
            logits.append(logits_of(x).numpy())
            labels.append(y.numpy())
        arrays = tuple(np.concatenate(a) for a in (images, logits, labels))
        return tf.data.Dataset.from_tensor_slices(({IMAGES: arrays[0], CACHED_LOGITS: arrays[1]},
                                                   arrays[2]))  # fmt: skip
    path = os.fspath(path)
    # One batch at a time through the teacher, then written as single examples; nothing but
    # the current batch is held in memory.
    with_logits = examples.map(lambda x, y: ({IMAGES: x, CACHED_LOGITS: logits_of(x)}, y))
    with_logits.unbatch().save(path)
    return tf.data.Dataset.load(path)


def training_batches(
    cached: tf.data.Dataset,
    *,
    batch_size: int,
    seed: int = 0,
    shuffle_buffer: int | None = None,
) -> tf.data.Dataset:
    """Shuffles the cache each epoch (seeded) and batches it, for ``Distiller.fit``.

    Each new iterator (Keras makes one per epoch) draws a new order; the sequence of orders
    depends on ``seed`` alone, so a run is reproducible from its start. (Unlike
    :func:`fitnets_tf.data.load`'s in-memory pipeline, a run resumed mid-way does not replay
    the same epoch orders.)

    Args:
        cached: what :func:`cache_teacher_logits` returned.
        batch_size: examples per batch.
        seed: shuffle seed.
        shuffle_buffer: examples held by the shuffle; ``None``: the whole cache (a uniform
            shuffle, as :func:`fitnets_tf.data.load` does; only sensible for an in-memory cache,
            since the buffer holds the examples). Set it for a cache streamed from disk.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
        )
    buffer = shuffle_buffer or int(cached.cardinality())
    if buffer < 1:
        raise ValueError(
            "The cache's size is unknown: pass `shuffle_buffer`. "
            f"Received: shuffle_buffer={shuffle_buffer!r}"
        )
    ds = cached.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def outputs_function(teacher: keras.Model, hint_layer: str | Sequence[str] | None = None):
    """A ``tf.function`` mapping images to the teacher's ``{"teacher_logits"[, "teacher_hint"]}``.

    One forward pass (``training=False``) gives both: the hint is an intermediate output (a
    Functional teacher is needed for it; logits alone work with any teacher). ``hint_layer``
    names one layer (the hint is its output) or several (a tuple of their outputs, in order:
    the Distiller's cached hints of several pairs).

    The logits are the ones the :class:`~fitnets_tf.Distiller` reads from a live teacher
    (:func:`fitnets_tf.models.logits.for_distilling`): a teacher ending in a softmax has it
    left out, where caching its probabilities as logits would soften them a second time.
    """
    teacher = for_distilling(teacher, "teacher")
    if hint_layer is None:
        return tf.function(
            lambda images: {CACHED_LOGITS: teacher(images, training=False)}, autograph=False
        )
    names = [hint_layer] if isinstance(hint_layer, str) else list(hint_layer)
    # An ONNX teacher's output comes from a call of its file apart from its hints' call.
    logits = logits_with_hints(teacher)
    outputs = [teacher.output if logits is None else logits,
               *(layer_output(teacher, n) for n in names)]  # fmt: skip
    tapped = keras.Model(teacher.inputs, outputs, name="teacher_outputs")

    def outputs_of(images):
        logits, *hints = tapped(images, training=False)
        # A tuple, not a list: tf.data would stack a list into one tensor.
        return {CACHED_LOGITS: logits,
                CACHED_HINT: hints[0] if isinstance(hint_layer, str) else tuple(hints)}  # fmt: skip

    return tf.function(outputs_of, autograph=False)


def hint_bytes(teacher: keras.Model, hint_layer: str | Sequence[str], num_examples: int) -> int:
    """Memory the cached hint(s) of ``hint_layer`` (one name or several) take (float32).

    Names as :func:`outputs_function` taps them: a layer inside a nested backbone too."""
    names = [hint_layer] if isinstance(hint_layer, str) else hint_layer
    teacher = flattened(teacher)
    per_example = sum(int(np.prod(layer_output(teacher, n).shape[1:])) for n in names)
    return per_example * 4 * num_examples


def cache_datasets(
    teacher: keras.Model,
    datasets: data_lib.Datasets,
    *,
    hint_layer: str | Sequence[str] | None = None,
    memory_budget: int | None = None,
    directory: str | os.PathLike | None = None,
    log=print,
) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """The training and validation batches of ``datasets`` with the teacher's outputs attached.

    Args:
        teacher: the frozen teacher.
        datasets: what :func:`fitnets_tf.data.load` returned, with its training split in memory
            (``cache=True``, the default) and no augmentation.
        hint_layer: also cache this layer's output, the hint of stage 1, or the outputs of
            several layers as a tuple (check the size with :func:`hint_bytes` first).
        memory_budget: bytes the training split's outputs may take in memory (None: no
            limit). Above it they are written to ``directory`` in shards and read back from
            there: the same batches, the same numbers.
        directory: where the shards go (needed above ``memory_budget``); shards already
            there for this teacher and these images are reused, damaged ones rebuilt.
        log: where a disk cache reports what it reuses and rebuilds.

    Returns:
        ``(train, validation)`` yielding ``({"images", "teacher_logits"[, "teacher_hint"]},
        labels)``; ``train`` draws the batches of ``datasets.train`` (same ``(seed, epoch)``
        order, same ``epoch`` variable: keep ``datasets.epoch_callback()`` in ``fit``).

    Raises:
        ValueError: the training split is not in memory, a hint is asked under augmentation,
            or the outputs exceed ``memory_budget`` and no ``directory`` is given.
        DiskFullError: the shards do not fit in ``directory``; the message says how much is
            needed.
    """
    if datasets.augmenting and hint_layer is not None:
        raise ValueError("Hints cannot be cached under augmentation: they are maps of each "
                         "crop. Cache the logits only (hint_layer=None).")  # fmt: skip
    if datasets.train_examples is None:
        raise ValueError(
            "Caching teacher outputs in the training order needs the training split in memory: "
            "load the data with cache=True, or use cache_teacher_logits(..., path=...) with "
            "training_batches(...) to stream a cache from disk."
        )
    outputs_of = outputs_function(teacher, hint_layer)
    plan, structure = teacher_shards.plan_outputs(outputs_of, datasets, memory_budget)
    if memory_budget is not None and plan.total_bytes > memory_budget:
        if directory is None:
            raise ValueError(
                f"The teacher's outputs take {plan.total_bytes} bytes, over "
                f"memory_budget={memory_budget}: pass `directory` to cache them on disk."
            )
        size, budget = map(teacher_shards.readable_size, (plan.total_bytes, memory_budget))
        log(f"teacher cache: the outputs take {size}, over the {budget} memory budget: cached "
            f"in {plan.num_shards} shard(s) in {directory}.")  # fmt: skip
        train = teacher_shards.streamed_batches(teacher, outputs_of, datasets, plan, structure,
                                                directory, hint_layer=hint_layer, log=log)  # fmt: skip
        return train, _validation_batches(outputs_of, datasets)
    images, labels = datasets.train_examples
    # The split's own image tensor, not a copy: only the outputs add memory.
    outputs = _outputs(outputs_of, tf.data.Dataset.from_tensor_slices(images).batch(_TEACHER_BATCH))
    if datasets.augmenting:
        train = _augmented_batches(outputs_of, datasets, outputs[CACHED_LOGITS])
    else:
        features = {IMAGES: images, **outputs}
        train = data_lib.epoch_batches(features, labels, epoch=datasets.epoch, seed=datasets.seed,
                                       batch_size=datasets.batch_size)  # fmt: skip
    return train, _validation_batches(outputs_of, datasets)


def _validation_batches(outputs_of, datasets: data_lib.Datasets) -> tf.data.Dataset | None:
    if datasets.validation is None:
        return None
    xs, ys = (np.concatenate(a) for a in zip(*datasets.validation.as_numpy_iterator(), strict=True))
    outputs = _outputs(outputs_of, tf.data.Dataset.from_tensor_slices(xs).batch(_TEACHER_BATCH))
    validation = tf.data.Dataset.from_tensor_slices(({IMAGES: xs, **outputs}, ys))
    return validation.batch(datasets.batch_size).prefetch(tf.data.AUTOTUNE)


def _augmented_batches(outputs_of, datasets: data_lib.Datasets, logits) -> tf.data.Dataset:
    """``datasets.train``'s augmented batches, each image with the logits of its flip."""
    images, labels = datasets.train_examples
    mirrored = logits
    if datasets.augmentation["flip"]:
        batches = tf.data.Dataset.from_tensor_slices(images).batch(_TEACHER_BATCH)
        mirrored = _outputs(outputs_of, batches.map(lambda x: tf.reverse(x, [2])))[CACHED_LOGITS]
    return data_lib.augmented_epoch_batches(
        images, labels, epoch=datasets.epoch, seed=datasets.seed, batch_size=datasets.batch_size,
        augmentation=datasets.augmentation, by_flip={CACHED_LOGITS: (logits, mirrored)},
        image_key=IMAGES,
    )  # fmt: skip


def default_memory_gb() -> float:
    """``--cache_memory_gb``'s default: a quarter of this machine's physical memory (the rest
    holds the images, the models and TensorFlow); 4 GiB where the size is unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4 / 2**30
    except (AttributeError, OSError, ValueError):
        return 4.0


def wanted(setting: str, datasets: data_lib.Datasets, uncropped: bool = False) -> bool:
    """Whether a run caches: ``setting`` is ``--cache_teacher`` (auto: whenever it is exact),
    ``uncropped`` is ``--kd_targets=uncropped`` (always a cache)."""
    if uncropped:
        return True
    if setting == "auto":
        return not datasets.augmenting and datasets.train_examples is not None
    return setting == "yes"


def cache_for_run(teacher: keras.Model, datasets: data_lib.Datasets,
                  hint_layer: str | Sequence[str] | None, log=print, *,
                  memory_gb: float | None = None, directory: str | os.PathLike | None = None,
                  ) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:  # fmt: skip
    """:func:`cache_datasets` for a run: the hint(s) only if they fit ``MAX_CACHED_HINT_BYTES``;
    in memory up to ``memory_gb`` GiB (``--cache_memory_gb``; None: :func:`default_memory_gb`),
    above it in shards in ``directory`` (the run's ``teacher_cache/``)."""
    start = time.perf_counter()
    n = datasets.num_train_examples
    if hint_layer is not None and datasets.augmenting:
        mirror = " and its mirror image" if datasets.augmentation["flip"] else ""
        log(f"teacher cache: logits of each image{mirror}; the hint depends on each crop, "
            "stage 1 computes it live.")  # fmt: skip
        hint_layer = None
    elif hint_layer is not None and hint_bytes(teacher, hint_layer, n) > MAX_CACHED_HINT_BYTES:
        size = hint_bytes(teacher, hint_layer, n) / 2**30
        log(f"teacher cache: the hint of {n} examples would take {size:.1f} GiB; stage 1 "
            "computes it live.")  # fmt: skip
        hint_layer = None
    budget = int((memory_gb or default_memory_gb()) * 2**30)
    cached = cache_datasets(teacher, datasets, hint_layer=hint_layer, memory_budget=budget,
                            directory=directory, log=log)  # fmt: skip
    what = "logits and hints" if hint_layer else "logits"
    log(f"teacher cache: {what} of {n} training examples in "
        f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    return cached


def _outputs(outputs_of, image_batches: tf.data.Dataset) -> dict:
    """The teacher's outputs for every image, in order, as whole-split tensors."""
    batches = [tf.nest.map_structure(np.asarray, outputs_of(x)) for x in image_batches]
    return tf.nest.map_structure(lambda *parts: tf.constant(np.concatenate(parts)), *batches)
