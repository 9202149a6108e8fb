"""The teacher's cached outputs on disk: checksummed ``.npy`` shards, read back by row.

:mod:`fitnets_tf.teacher_cache` keeps the teacher's per-example outputs in memory while they
fit its budget; above it they come here (:func:`streamed_batches`). The rows (one per training
image, then one per mirror image) are cut into shards of a fixed number of rows, one ``.npy``
file per output and shard, each written atomically (:func:`fitnets_tf.run.io.atomic_path`)
with its sha256 beside it. Training reads them back memory-mapped (``np.load(mmap_mode="r")``): the pages belong to
the operating system's file cache, which it evicts under pressure, so the process holds no
more than the batch being gathered. The epoch's order is a random permutation of the whole
split, so each batch gathers scattered rows: about 0.3 ms per batch of 128 x 1000 logits from
the file cache (measured). A ``tf.data`` snapshot cannot serve this: it replays its elements
in the order they were written.

``manifest.json`` says what the shards hold (a digest of the teacher's weights, or an ONNX
teacher's files, and of the images, and the outputs' layout). A resumed run reuses the shards
whose checksums match, rebuilds the others (naming the damaged ones), and rebuilds all of them
for another teacher or other images.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from fitnets_tf import data as data_lib
from fitnets_tf.distiller import IMAGES
from fitnets_tf.errors import DiskFullError
from fitnets_tf.models import onnx_model
from fitnets_tf.models.logits import ends_in_softmax
from fitnets_tf.models.nesting import flattened
from fitnets_tf.run import io
from fitnets_tf.shard_plan import ShardPlan

MANIFEST = "manifest.json"
# A shard is assembled in memory before it is written: this bounds that, and the file count.
MAX_SHARD_BYTES = 256 * 2**20
# Images per teacher call while caching (memory or disk): the same batches give the same
# numbers (a kernel's result may depend on the batch it ran in).
TEACHER_BATCH = 1024
# The feature that carries each example's row until its outputs replace it.
_ROW = "teacher_cache_row"


class ShardedRows:
    """The shards of ``plan`` under ``directory``, memory-mapped; rows gathered in any order."""

    def __init__(self, directory: str | os.PathLike, plan: ShardPlan):
        self.plan = plan
        directory = pathlib.Path(directory)
        # .view: bfloat16 rows are stored as their bits (see _write_npy).
        self.shards = [[np.load(directory / plan.file_name(j, k), mmap_mode="r").view(dtype)
                        for k in range(plan.num_shards)]
                       for j, dtype in enumerate(plan.dtypes)]  # fmt: skip

    def gather(self, rows: np.ndarray) -> list[np.ndarray]:
        """Each output's ``rows`` (in that order), one array per output."""
        shard, offset = np.divmod(np.asarray(rows, np.int64), self.plan.rows_per_shard)
        gathered = []
        for parts, shape, dtype in zip(self.shards, self.plan.row_shapes, self.plan.dtypes,
                                       strict=True):  # fmt: skip
            out = np.empty((len(shard), *shape), dtype)
            for k in np.unique(shard):
                here = shard == k
                out[here] = parts[k][offset[here]]
            gathered.append(out)
        return gathered

    def gather_tensors(self, rows: tf.Tensor) -> list[tf.Tensor]:
        """:meth:`gather` inside a ``tf.data`` map: ``rows`` is a 1-D int64 tensor."""
        dtypes = [tf.as_dtype(d) for d in self.plan.dtypes]
        # Not stateful: the shards do not change while they are read, so tf.data may treat the
        # map as a pure function of the row indices.
        outputs = tf.numpy_function(self.gather, [rows], dtypes, stateful=False)
        for tensor, shape in zip(outputs, self.plan.row_shapes, strict=True):
            tensor.set_shape([None, *shape])
        return outputs


def build(directory: str | os.PathLike, plan: ShardPlan, key: str,
          blocks: Sequence[tuple[int, int]], compute: Callable[[int, int], list[np.ndarray]],
          *, advice: str = "", log=print) -> ShardedRows:  # fmt: skip
    """Writes the shards of ``plan`` that ``directory`` lacks, then opens them all.

    Args:
        directory: where the shards live (created if needed).
        plan: the shards' layout.
        key: what the rows are computed from (teacher, images...); shards made under another
            key are deleted first.
        blocks: ``(start, stop)`` row ranges, in order, covering ``[0, plan.num_rows)``: the
            units ``compute`` is called on (its batches: the same rows in the same batches give
            the same numbers as an in-memory cache computed in those batches).
        compute: ``compute(start, stop)`` returns the rows ``[start, stop)`` of every output.
        advice: what else the user can do when the disk is full (a sentence).
        log: where damaged shards and shards made from other rows are reported.

    Raises:
        DiskFullError: the shards do not fit (checked before computing, and while writing):
            names ``directory`` and the bytes needed. Shards already written stay (they are
            reused next time); no partial shard is left.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for litter in directory.glob(".tmp-*"):  # a writer killed mid-shard (one writer per run)
        litter.unlink()
    todo = _shards_to_write(directory, plan, key, log)
    if todo:
        free = shutil.disk_usage(directory).free
        if free < _need(directory, plan, todo):
            message = _full_disk_message(directory, plan, todo, advice)
            raise DiskFullError(message.format(reason=f"only {readable_size(free)} are free"))
        written: list[int] = []
        try:
            io.write_json(directory / MANIFEST, {"key": key, **plan.as_json()})
            _write(directory, plan, todo, blocks, compute, written)
        except Exception as e:
            if (reason := io.disk_full_reason(e)) is None:
                raise
            left = sorted(set(todo) - set(written))  # still to write now, not when writing began
            message = _full_disk_message(directory, plan, left, advice)
            raise DiskFullError(message.format(reason=reason)) from e
    return ShardedRows(directory, plan)


def _shards_to_write(directory: pathlib.Path, plan: ShardPlan, key: str, log) -> list[int]:
    """The shards to (re)write; deletes every shard when the manifest is for other rows."""
    manifest = directory / MANIFEST
    try:
        recorded = json.loads(manifest.read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded != {"key": key, **plan.as_json()}:
        # Deleted before the new manifest is written: an old shard must never pass for a new one.
        old = sorted(directory.glob("output*-shard*"))
        if old:
            log(f"teacher cache: {directory} holds the outputs of another teacher, other "
                "images or another layout (or its manifest.json is unreadable); rebuilding "
                "every shard.")  # fmt: skip
        for path in old:
            path.unlink()
        manifest.unlink(missing_ok=True)
        return list(range(plan.num_shards))
    todo = []
    for shard in range(plan.num_shards):
        files = [directory / plan.file_name(j, shard) for j in range(len(plan.row_shapes))]
        problems = {f.name: p for f in files if (p := _problem(f))}
        if problems:
            todo.append(shard)
        damaged = [f"{name} ({p})" for name, p in problems.items() if p != "missing"]
        if damaged:
            log(f"teacher cache: rebuilding shard {shard}: {'; '.join(damaged)}.")
    return todo


def _problem(path: pathlib.Path) -> str | None:
    """Why the shard file ``path`` cannot be used ("missing": never written), or None."""
    if not path.exists():
        return "missing"
    if not io.checksum_path(path).exists():
        return "no sha256 was recorded for it: its write was interrupted"
    return io.checksum_problem(path)


def _write(directory, plan: ShardPlan, todo: list[int], blocks, compute, written: list) -> None:
    """Computes the blocks that hold rows of ``todo`` and writes each shard once complete,
    adding it to ``written``."""
    wanted, parts = set(todo), {}
    for start, stop in blocks:
        touched = range(start // plan.rows_per_shard, (stop - 1) // plan.rows_per_shard + 1)
        touched = [k for k in touched if k in wanted]
        if not touched:
            continue
        outputs = compute(start, stop)
        for shard in touched:
            first, last = plan.bounds(shard)
            lo, hi = max(first, start), min(last, stop)
            parts.setdefault(shard, []).append([o[lo - start : hi - start] for o in outputs])
            if hi == last:  # blocks come in order: the shard is complete
                pieces = zip(*parts.pop(shard), strict=True)  # per output: its pieces
                _write_shard(directory, plan, shard, [np.concatenate(p) for p in pieces])
                written.append(shard)


def _write_shard(directory: pathlib.Path, plan: ShardPlan, shard: int, arrays) -> None:
    """One shard, every output's file atomically and then its sha256; all or nothing."""
    paths = [directory / plan.file_name(j, shard) for j in range(len(arrays))]
    try:
        for path, array in zip(paths, arrays, strict=True):
            # The old checksum goes first: a kill mid-way leaves a file without one (rebuilt),
            # never a new file beside an old file's checksum.
            io.checksum_path(path).unlink(missing_ok=True)
            with io.atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    _write_npy(f, array)
                digest = io.file_sha256(tmp)
            io.write_text(io.checksum_path(path), f"{digest}  {path.name}\n")
    except BaseException:
        for path in paths:
            path.unlink(missing_ok=True)
            io.checksum_path(path).unlink(missing_ok=True)
        raise


def _write_npy(f, array: np.ndarray) -> None:
    """``np.save`` by Python's own ``write``: the ``ndarray.tofile`` of ``np.save`` drops the
    errno of a full disk ("N requested and M written"), which then reads as any other error."""
    array = np.ascontiguousarray(array)
    if array.dtype.kind == "V":  # bfloat16 (mixed precision): .npy has no name for it; its bits
        array = array.view(f"u{array.dtype.itemsize}")
    np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
    f.write(memoryview(array).cast("B"))


def _need(directory: pathlib.Path, plan: ShardPlan, todo: list[int]) -> int:
    return plan.disk_bytes(todo, os.statvfs(directory).f_frsize or 4096)


def _full_disk_message(directory, plan: ShardPlan, todo: list[int], advice: str) -> str:
    # disk_full_as_user_error fills in {reason}: every other brace is escaped.
    where = str(directory).replace("{", "{{").replace("}", "}}")
    advice = advice.replace("{", "{{").replace("}", "}}")
    return (f"Cannot write the teacher's cached outputs to {where}: {{reason}}. The "
            f"{len(todo)} shard(s) still to write need "
            f"{readable_size(_need(directory, plan, todo))} there (shards "
            "already written are kept and reused). Free that much space, or run on a larger "
            f"disk{'; ' + advice if advice else ''}.")  # fmt: skip


def readable_size(nbytes: int) -> str:
    """``nbytes`` for a message: "597.5 kB", "5.1 GB"."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


# -- the teacher's outputs: what fitnets_tf.teacher_cache stores here --------------------------


_FULL_DISK_ADVICE = (
    "or keep the outputs in memory with a larger --cache_memory_gb, or run the teacher live "
    "every epoch with --cache_teacher=no"
)


def plan_outputs(outputs_of, datasets: data_lib.Datasets, memory_budget: int | None):
    """The outputs' layout on disk, and their structure (a dict; the hints may be a tuple).

    One row per training image, then one per mirror image when flips are drawn; a shard is at
    most a quarter of the budget, since one is assembled in memory before it is written.
    """
    images, labels = datasets.train_examples
    spec = tf.TensorSpec([None, *images.shape[1:]], images.dtype)
    structure = outputs_of.get_concrete_function(spec).structured_outputs
    leaves = tf.nest.flatten(structure)
    mirrored = datasets.augmenting and datasets.augmentation["flip"]
    shard_bytes = min(MAX_SHARD_BYTES, (memory_budget or 2**62) // 4)
    plan = ShardPlan.within(
        shard_bytes, int(labels.shape[0]) * (2 if mirrored else 1),
        [t.shape[1:] for t in leaves], [t.dtype.name for t in leaves],
    )  # fmt: skip
    return plan, structure


def _cache_key(teacher: keras.Model, images, hint_layer) -> str:
    """A digest of what the outputs are computed from: a cache on disk is reused only for it."""
    digest = hashlib.sha256()
    for weight in teacher.weights:  # the non-trainable ones too: batch-norm statistics
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    if onnx := onnx_model.onnx_layer(teacher):  # its weights are in its files, not in Keras
        files = [onnx.onnx_path, *onnx_model.data_files(onnx.onnx_path)]
        digest.update(io.files_sha256(files).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    what = [hint_layer, teacher.dtype_policy.name, TEACHER_BATCH]
    if ends_in_softmax(flattened(teacher)):
        # The logits under it (teacher_cache.outputs_function): shards written when the cache
        # stored such a teacher's probabilities have the same weights, and must not be reused.
        what.append("logits under the softmax")
    digest.update(json.dumps(what).encode())
    return digest.hexdigest()


def _blocks(plan, datasets: data_lib.Datasets) -> list[tuple[int, int]]:
    """The rows of each teacher call: the in-memory cache's batches, images then mirrors."""
    n = datasets.num_train_examples
    return [(part * n + s, part * n + min(s + TEACHER_BATCH, n))
            for part in range(plan.num_rows // n) for s in range(0, n, TEACHER_BATCH)]  # fmt: skip


def _computer(outputs_of, datasets: data_lib.Datasets):
    """``compute(start, stop)`` for :func:`build`: the outputs of those rows."""
    images, n = datasets.train_examples[0], datasets.num_train_examples

    def compute(start, stop):
        part, first = divmod(start, n)
        x = images[first : first + stop - start]
        x = tf.reverse(x, [2]) if part else x  # rows n... are the mirror images'
        return [np.asarray(t) for t in tf.nest.flatten(outputs_of(x))]

    return compute


def streamed_batches(teacher: keras.Model, outputs_of, datasets: data_lib.Datasets,
                     plan: ShardPlan, structure, directory: str | os.PathLike, *,
                     hint_layer=None, log=print) -> tf.data.Dataset:  # fmt: skip
    """``datasets.train``'s batches with the teacher's outputs, cached in shards in ``directory``.

    Args:
        teacher: the frozen teacher (its weights are part of the cache's key).
        outputs_of: :func:`fitnets_tf.teacher_cache.outputs_function` of ``teacher``.
        datasets: as for :func:`fitnets_tf.teacher_cache.cache_datasets`.
        plan, structure: what :func:`plan_outputs` returned.
        directory: where the shards are (reused if they were made from the same teacher and
            images and pass their checksums) or are written to.
        hint_layer: the hint layer(s) ``outputs_of`` taps (part of the key).
        log: where damaged or stale shards are reported.

    Raises:
        DiskFullError: the shards do not fit in ``directory``.
    """
    key = _cache_key(teacher, datasets.train_examples[0], hint_layer)
    store = build(directory, plan, key, _blocks(plan, datasets), _computer(outputs_of, datasets),
                  advice=_FULL_DISK_ADVICE, log=log)  # fmt: skip
    return _batches(store, structure, datasets)


def _batches(store: ShardedRows, structure, datasets: data_lib.Datasets) -> tf.data.Dataset:
    """``datasets.train``'s batches, each example's outputs gathered from ``store`` by row.

    The pipeline batches each example's row number beside its image (``by_flip`` picks the
    mirror image's row for a flipped view), so the order and the augmentation are the
    pipeline's own; the rows' outputs then replace the row numbers.
    """
    images, labels = datasets.train_examples
    n = datasets.num_train_examples
    rows = tf.range(n, dtype=tf.int64)
    order = dict(epoch=datasets.epoch, seed=datasets.seed, batch_size=datasets.batch_size)
    if datasets.augmenting:
        mirrored = rows + n if store.plan.num_rows > n else rows
        batches = data_lib.augmented_epoch_batches(
            images, labels, augmentation=datasets.augmentation, by_flip={_ROW: (rows, mirrored)},
            image_key=IMAGES, **order,
        )  # fmt: skip
    else:
        batches = data_lib.epoch_batches({IMAGES: images, _ROW: rows}, labels, **order)

    def attach(features, labels):
        outputs = tf.nest.pack_sequence_as(structure, store.gather_tensors(features[_ROW]))
        return {IMAGES: features[IMAGES], **outputs}, labels

    batches = batches.map(attach, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE)
