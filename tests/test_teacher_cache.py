import collections
import dataclasses
import errno
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_data, tiny_dataset

from fitnets_tf import data, models, teacher_cache, teacher_shards
from fitnets_tf.distiller import Distiller
from fitnets_tf.errors import DiskFullError


def _kd_distiller(teacher, student):
    distiller = Distiller(teacher, student, temperature=3.0, kd_lambda=4.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), phase="kd")
    return distiller


@pytest.mark.parametrize("on_disk", [False, True])
def test_cached_kd_losses_equal_live_ones(teacher, student, tmp_path, on_disk):
    path = tmp_path / "cache" if on_disk else None
    cached = teacher_cache.cache_teacher_logits(
        teacher, tiny_dataset(batch_size=8), augmenting=False, path=path
    )
    distiller = _kd_distiller(teacher, student)
    live = distiller.evaluate(tiny_dataset(batch_size=8), return_dict=True, verbose=0)
    from_cache = distiller.evaluate(cached.batch(8), return_dict=True, verbose=0)
    for name in ("loss", "ce_loss", "kd_loss"):
        np.testing.assert_allclose(from_cache[name], live[name], rtol=1e-5)


def _with_softmax(model):
    return keras.Model(model.inputs, keras.layers.Softmax(name="probs")(model.output), name="p")


@pytest.mark.parametrize("on_disk", [False, True])
def test_a_softmax_teachers_cache_holds_the_logits_the_distiller_reads(teacher, student,
                                                                       tmp_path, on_disk):  # fmt: skip
    # Its probabilities stored as logits would be softened a second time: near-uniform targets.
    with_softmax = _with_softmax(teacher)
    cached = teacher_cache.cache_teacher_logits(
        with_softmax, tiny_dataset(batch_size=8), augmenting=False,
        path=tmp_path / "cache" if on_disk else None,
    )  # fmt: skip
    logits = np.concatenate([inputs["teacher_logits"] for inputs, _ in cached.batch(8)])
    np.testing.assert_allclose(logits, teacher(tiny_data()[0], training=False), rtol=1e-5)
    distiller = _kd_distiller(with_softmax, student)
    live = distiller.evaluate(tiny_dataset(batch_size=8), return_dict=True, verbose=0)
    from_cache = distiller.evaluate(cached.batch(8), return_dict=True, verbose=0)
    for name in ("loss", "ce_loss", "kd_loss"):
        np.testing.assert_allclose(from_cache[name], live[name], rtol=1e-5)


def test_cache_pairs_each_image_with_its_own_logits(teacher):
    x, y = tiny_data()
    # A source shuffled differently on each pass: images must still carry their own logits.
    source = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(32, seed=1).batch(8)
    cached = teacher_cache.cache_teacher_logits(teacher, source, augmenting=False)
    batches = teacher_cache.training_batches(cached, batch_size=8, seed=0)
    for inputs, _ in batches:
        expected = teacher(inputs["images"], training=False)
        np.testing.assert_allclose(inputs["teacher_logits"], expected, rtol=1e-5, atol=1e-6)


def test_training_batches_reshuffle_each_epoch_reproducibly(teacher):
    cached = teacher_cache.cache_teacher_logits(teacher, tiny_dataset(), augmenting=False)

    def two_epochs():
        batches = teacher_cache.training_batches(cached, batch_size=32, seed=3)
        return [next(iter(batches))[1].numpy() for _ in range(2)]

    first, second = two_epochs()
    assert sorted(first) == sorted(tiny_data()[1])
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(two_epochs()[0], first)


def test_refuses_augmented_input(teacher):
    with pytest.raises(ValueError, match="random crop/flip.*stale targets.*--augment"):
        teacher_cache.cache_teacher_logits(teacher, tiny_dataset(), augmenting=True)


def test_disk_cache_is_streamed_from_path(teacher, tmp_path):
    path = tmp_path / "logits"
    cached = teacher_cache.cache_teacher_logits(
        teacher, tiny_dataset(), augmenting=False, path=path
    )
    assert path.is_dir() and any(path.iterdir())
    assert int(cached.cardinality()) == 32
    batches = teacher_cache.training_batches(cached, batch_size=8, shuffle_buffer=16)
    assert sum(int(tf.shape(y)[0]) for _, y in batches) == 32


# -- cache_datasets: the experiment runner's cache, in data.load's (seed, epoch) order ----------


def _synthetic(augment=False, **kwargs):
    return data.load("synthetic", batch_size=64, seed=5, limit=192, validation_size=64,
                     augment=augment, **kwargs)  # fmt: skip


def _mnist_teacher():
    return models.build("mnist_teacher", (28, 28, 1), 10, seed=0, kernel_initializer="he_uniform")


def test_cached_batches_are_the_pipelines_batches_with_the_teachers_outputs():
    datasets = _synthetic()
    teacher = _mnist_teacher()
    hint = models.hint_layer_name("mnist_teacher")
    train, validation = teacher_cache.cache_datasets(teacher, datasets, hint_layer=hint)
    tap = keras.Model(teacher.inputs, teacher.get_layer(hint).output)
    for epoch in (0, 3):  # what EpochSync sets at each epoch start, as on a resume
        datasets.epoch.assign(epoch)
        plain = list(datasets.train)
        datasets.epoch.assign(epoch)
        cached = list(train)
        assert len(cached) == len(plain) == 3  # 192 examples
        for (x, y), (inputs, labels) in zip(plain, cached, strict=True):
            np.testing.assert_array_equal(inputs["images"], x)
            np.testing.assert_array_equal(labels, y)
            np.testing.assert_allclose(inputs["teacher_logits"], teacher(x, training=False),
                                       rtol=1e-4, atol=1e-5)  # fmt: skip
            np.testing.assert_allclose(inputs["teacher_hint"], tap(x, training=False),
                                       rtol=1e-4, atol=1e-5)  # fmt: skip
    val_labels = np.concatenate([y for _, y in validation])
    np.testing.assert_array_equal(val_labels, np.concatenate([y for _, y in datasets.validation]))


def test_cached_hint_gives_the_live_hint_loss(teacher, student):
    x, y = tiny_data()
    distiller = Distiller(teacher, student, hint_layer="conv2", guided_layer="conv2")
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), phase="hints")
    live = distiller.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    outputs = teacher_cache.outputs_function(teacher, "conv2")(x)
    cached = {"images": x, "teacher_hint": outputs["teacher_hint"].numpy()}
    from_cache = distiller.evaluate(cached, y, batch_size=8, return_dict=True, verbose=0)
    np.testing.assert_allclose(from_cache["hint_loss"], live["hint_loss"], rtol=1e-5)
    assert live["hint_loss"] > 0


def test_the_pipelines_cache_of_a_softmax_teacher_holds_its_logits(tmp_path):
    datasets, teacher = _synthetic(), _mnist_teacher()
    hint = models.hint_layer_name("mnist_teacher")
    x = datasets.train_examples[0][:16]
    outputs = teacher_cache.outputs_function(_with_softmax(teacher), hint)(x)
    np.testing.assert_allclose(outputs["teacher_logits"], teacher(x, training=False),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    log = []
    teacher_cache.cache_datasets(teacher, datasets, memory_budget=4_000, directory=tmp_path,
                                 log=log.append)  # fmt: skip
    log = []
    train, _ = teacher_cache.cache_datasets(_with_softmax(teacher), datasets, memory_budget=4_000,
                                            directory=tmp_path, log=log.append)  # fmt: skip
    # Shards of the same weights, but of other outputs: not reused.
    assert "holds the outputs of another teacher" in log[1]
    inputs, _ = next(iter(train))
    np.testing.assert_allclose(inputs["teacher_logits"],
                               teacher(inputs["images"], training=False), rtol=1e-4, atol=1e-5)  # fmt: skip


def test_a_hint_inside_a_nested_backbone_is_cached_and_sized(teacher):
    # As the Distiller names it: the backbone's layers are brought to the top level.
    backbone = keras.Model(teacher.inputs, teacher.get_layer("gap").output, name="backbone")
    nested = keras.Sequential([keras.Input((8, 8, 1)), backbone, keras.layers.Dense(3)])
    x, _ = tiny_data(4)
    hint = teacher_cache.outputs_function(nested, "pool1")(x)["teacher_hint"]
    np.testing.assert_allclose(hint, keras.Model(teacher.inputs, teacher.get_layer("pool1").output)(x),
                               rtol=1e-5)  # fmt: skip
    assert teacher_cache.hint_bytes(nested, "pool1", 10) == 4 * 4 * 6 * 4 * 10


def test_cache_datasets_refuses_hints_under_augmentation_and_streamed_data():
    teacher = _mnist_teacher()
    hint = models.hint_layer_name("mnist_teacher")
    with pytest.raises(ValueError, match="Hints cannot be cached under augmentation"):
        teacher_cache.cache_datasets(teacher, _synthetic(augment=True), hint_layer=hint)
    with pytest.raises(ValueError, match="needs the training split in memory.*cache=True"):
        teacher_cache.cache_datasets(teacher, _synthetic(cache=False))


def test_hint_bytes():
    teacher = _mnist_teacher()
    # The MNIST teacher's hint is 4x4x48 float32 per example.
    assert teacher_cache.hint_bytes(teacher, "pool2", 10) == 4 * 4 * 48 * 4 * 10


def test_augmented_cache_gives_each_crop_the_logits_of_its_uncropped_image():
    datasets = _synthetic(augment=True, crop_padding=2)  # synthetic: crops, no flips
    teacher = _mnist_teacher()
    train, _ = teacher_cache.cache_datasets(teacher, datasets)
    images, _ = datasets.train_examples
    uncropped = teacher(images, training=False).numpy()
    datasets.epoch.assign(2)
    plain = list(datasets.train)
    datasets.epoch.assign(2)
    for (x, y), (inputs, labels) in zip(plain, train, strict=True):
        np.testing.assert_array_equal(inputs["images"], x)  # the same crops
        np.testing.assert_array_equal(labels, y)
        # Each row is the logits of one uncropped training image (not of the crop).
        distance = np.abs(inputs["teacher_logits"].numpy()[:, None] - uncropped[None]).max(-1)
        assert (distance.min(axis=1) < 1e-4).all()
        assert not np.allclose(inputs["teacher_logits"], teacher(x, training=False), atol=1e-3)


def test_values_follow_each_images_flip():
    # Image i: its left half is i + 1, its right half 0, so a flipped one is told by its right.
    n = 64
    images = np.zeros((n, 4, 4, 1), np.float32)
    images[:, :, :2] = (np.arange(n, dtype=np.float32) + 1)[:, None, None, None]
    values = np.arange(n, dtype=np.float32)
    epoch = tf.Variable(0, dtype=tf.int64)
    batches = data.augmented_epoch_batches(
        tf.constant(images), tf.range(n), epoch=epoch, seed=1, batch_size=16,
        augmentation=dict(crop_padding=0, flip=True), by_flip={"v": (values, -values - 1)},
    )  # fmt: skip
    flips = 0
    for inputs, labels in batches:
        flipped = inputs["images"].numpy()[:, 0, 3, 0] > 0
        expected = np.where(flipped, -labels.numpy() - 1, labels.numpy())
        np.testing.assert_array_equal(inputs["v"], expected)
        flips += flipped.sum()
    assert 16 < flips < 48  # both ways occur


# -- over the memory budget: shards on disk, the same batches ----------------------------------


def _batches(train, datasets, epoch):
    datasets.epoch.assign(epoch)  # what EpochSync sets at each epoch start, as on a resume
    return list(train)


def _assert_same_batches(on_disk, in_memory):
    assert len(on_disk) == len(in_memory) == 3
    for (features, labels), (expected, expected_labels) in zip(on_disk, in_memory, strict=True):
        assert sorted(features) == sorted(expected)
        for key in expected:
            np.testing.assert_array_equal(features[key], expected[key])
        np.testing.assert_array_equal(labels, expected_labels)


@pytest.mark.parametrize("augmented", [False, True])
def test_disk_cache_gives_the_memory_caches_batches(tmp_path, augmented):
    datasets, hint = _synthetic(), models.hint_layer_name("mnist_teacher")
    # 192 rows of logits (40 bytes) and hint (3,072 bytes): 597 kB, shards of 8 rows.
    budget = 100_000
    if augmented:  # crops and flips: each view gets the logits of its flip, rows 192... mirrors'
        datasets = dataclasses.replace(_synthetic(augment=True, crop_padding=2),
                                       augmentation=dict(crop_padding=2, flip=True))  # fmt: skip
        hint, budget = None, 4_000  # 384 rows of logits: 15 kB, shards of 25 rows
    teacher, log = _mnist_teacher(), []
    in_memory, _ = teacher_cache.cache_datasets(teacher, datasets, hint_layer=hint)
    on_disk, validation = teacher_cache.cache_datasets(
        teacher, datasets, hint_layer=hint, memory_budget=budget, directory=tmp_path,
        log=log.append,
    )  # fmt: skip
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["num_rows"] == (384 if augmented else 192)
    assert manifest["rows_per_shard"] == (25 if augmented else 8)
    assert len(list(tmp_path.glob("*.npy"))) == (16 if augmented else 2 * 24)
    assert "memory budget: cached in" in log[0]
    for epoch in (0, 3):
        _assert_same_batches(
            _batches(on_disk, datasets, epoch), _batches(in_memory, datasets, epoch)
        )
    assert validation is not None  # held-out outputs stay in memory


def test_disk_cache_is_reused_and_a_damaged_shard_rebuilt(tmp_path):
    datasets, teacher = _synthetic(), _mnist_teacher()

    def cache(teacher, log):
        return teacher_cache.cache_datasets(teacher, datasets, memory_budget=4_000,
                                            directory=tmp_path, log=log.append)[0]  # fmt: skip

    expected = _batches(cache(teacher, []), datasets, 3)
    shards = sorted(tmp_path.glob("*.npy"))
    assert len(shards) == 8  # 192 rows of 40 bytes, 25 rows per shard
    written = {p: p.stat().st_mtime_ns for p in shards}
    log = []
    cache(teacher, log)
    assert len(log) == 1 and {p: p.stat().st_mtime_ns for p in shards} == written  # reused
    damaged = shards[2]
    content = bytearray(damaged.read_bytes())
    content[-1] ^= 1  # one bit of the last logit
    damaged.write_bytes(bytes(content))
    shards[5].with_name(shards[5].name + ".sha256").unlink()  # a write killed before its sha256
    log = []
    train = cache(teacher, log)
    assert "rebuilding shard 2: output0-shard00002.npy (its content" in log[1]
    assert "rebuilding shard 5: output0-shard00005.npy (no sha256" in log[2]
    rewritten = [p for p in shards if p.stat().st_mtime_ns != written[p]]
    assert rewritten == [shards[2], shards[5]]
    _assert_same_batches(_batches(train, datasets, 3), expected)
    log = []
    cache(_mnist_teacher_of_seed(1), log)  # another teacher: every shard is rebuilt
    assert "holds the outputs of another teacher" in log[1]
    assert all(p.stat().st_mtime_ns != written[p] for p in shards)


def _mnist_teacher_of_seed(seed):
    return models.build(
        "mnist_teacher", (28, 28, 1), 10, seed=seed, kernel_initializer="he_uniform"
    )


def test_shards_are_written_in_blocks_and_gathered_in_any_order(tmp_path):
    # Rows r of two outputs: r (one value) and (r, -r) in bfloat16 (what mixed precision gives,
    # which .npy cannot name). Blocks of 7 rows, shards of 5.
    plan = teacher_shards.ShardPlan.within(5 * 8, 23, [(), (2,)], ["int32", "bfloat16"])
    assert (plan.rows_per_shard, plan.num_shards, plan.bounds(4)) == (5, 5, (20, 23))
    calls = []

    def compute(start, stop):
        calls.append((start, stop))
        rows = np.arange(start, stop)
        pairs = np.stack([rows, -rows], 1).astype(tf.bfloat16.as_numpy_dtype)
        return [rows.astype("int32"), pairs]

    blocks = [(s, min(s + 7, 23)) for s in range(0, 23, 7)]
    store = teacher_shards.build(tmp_path, plan, "key", blocks, compute)
    assert calls == blocks
    rows = np.array([22, 0, 9, 10, 4, 17, 4])
    values, pairs = store.gather(rows)
    np.testing.assert_array_equal(values, rows)
    assert pairs.dtype == tf.bfloat16.as_numpy_dtype
    np.testing.assert_array_equal(pairs.astype("float32"), np.stack([rows, -rows], 1))
    tensors = store.gather_tensors(tf.constant(rows))  # as a tf.data map calls it
    assert tensors[1].dtype == tf.bfloat16
    np.testing.assert_array_equal(tensors[0], rows)
    (tmp_path / plan.file_name(1, 3)).unlink()  # rows 15-19: only the block of rows 14-20 runs
    calls.clear()
    teacher_shards.build(tmp_path, plan, "key", blocks, compute)
    assert calls == [(14, 21)]


def test_a_disk_without_room_is_refused_before_the_teacher_runs(tmp_path, monkeypatch):
    plan = teacher_shards.ShardPlan.within(400, 1000, [(10,)], ["float32"])
    free = collections.namedtuple("usage", "total used free")(10**9, 10**9 - 1000, 1000)
    monkeypatch.setattr(teacher_shards.shutil, "disk_usage", lambda _: free)
    with pytest.raises(DiskFullError) as error:
        teacher_shards.build(tmp_path, plan, "key", [(0, 1000)], lambda *_: pytest.fail("ran"),
                             advice="or else")  # fmt: skip
    message = str(error.value)
    assert f"to {tmp_path}: only 1.0 kB are free" in message
    # 100 shards of one 528-byte file (400 of rows) and its sha256: 819.2 kB in 4 kB blocks.
    need = teacher_shards.readable_size(plan.disk_bytes(range(100), _block(tmp_path)))
    assert f"The 100 shard(s) still to write need {need} there" in message
    assert message.endswith("; or else.")
    assert list(tmp_path.iterdir()) == []


def _block(path):
    return os.statvfs(path).f_frsize


def test_the_disk_shards_need_is_counted_in_whole_blocks_with_their_checksums():
    plan = teacher_shards.ShardPlan.within(400, 1001, [(10,), ()], ["float32", "int64"])
    assert (plan.rows_per_shard, plan.num_shards) == (8, 126)  # rows of 48 bytes
    # Shard 0: 128 + 8 * 40 = 448 and 128 + 8 * 8 = 192 bytes, each file and sha256 a block.
    assert plan.disk_bytes([0], 4096) == 4 * 4096
    assert plan.disk_bytes([0], 256) == (2 + 1 + 1 + 1) * 256
    assert plan.disk_bytes([125], 1) == (128 + 40 + 1) + (128 + 8 + 1)  # the last: one row
    assert plan.disk_bytes([], 4096) == 0


def test_the_disk_shards_need_covers_what_they_take(tmp_path):
    plan = teacher_shards.ShardPlan.within(400, 1000, [(10,), ()], ["float32", "int64"])
    compute = lambda a, b: [np.ones((b - a, 10), "float32"), np.arange(a, b)]  # noqa: E731
    teacher_shards.build(tmp_path, plan, "key", [(0, 1000)], compute)
    taken = sum(p.stat().st_blocks * 512 for p in tmp_path.iterdir() if p.name != "manifest.json")
    need = plan.disk_bytes(range(plan.num_shards), _block(tmp_path))
    assert taken <= need <= 1.01 * taken, (taken, need)


def test_a_disk_that_fills_midway_names_the_shards_still_to_write(tmp_path):
    # The message was made before writing began: "The 100 shard(s) still to write need 4.0 kB"
    # with 30 of them written and kept.
    plan = teacher_shards.ShardPlan.within(40, 100, [(10,)], ["float32"])  # 100 shards, 1 row

    def compute(start, stop):
        if start >= 30:  # the disk fills (another writer) once 30 shards are written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return [np.zeros((stop - start, 10), "float32")]

    with pytest.raises(DiskFullError) as error:
        teacher_shards.build(tmp_path, plan, "key", [(s, s + 10) for s in range(0, 100, 10)],
                             compute)  # fmt: skip
    need = teacher_shards.readable_size(plan.disk_bytes(range(30, 100), _block(tmp_path)))
    assert f"to {tmp_path}: the disk is full. The 70 shard(s) still to write need {need}" in str(
        error.value)  # fmt: skip
    assert len(list(tmp_path.glob("output0-shard*.npy"))) == 30


def test_a_full_disk_fails_clearly_leaves_no_partial_shard_and_the_retry_matches(tmp_path):
    script = pathlib.Path(__file__).parent / "full_disk_teacher_cache_check.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    kind, message = result["error"]
    assert kind == "DiskFullError"
    assert f"to {tmp_path / 'teacher_cache'}: the file size limit is exceeded" in message
    # 597.5 kB of rows; in whole 4 kB blocks (ext4's, tmpfs'), with each file's sha256: 983.0.
    need = "983.0 kB" if _block(tmp_path) == 4096 else ""
    assert f"The 24 shard(s) still to write need {need}" in message
    assert "--cache_memory_gb" in message
    assert result["left"] == ["manifest.json"]  # no shard, no temporary file
    assert result["same"]


def test_cache_for_run_keeps_the_cache_in_memory_under_the_budget(tmp_path):
    datasets, log = _synthetic(), []
    train, _ = teacher_cache.cache_for_run(_mnist_teacher(), datasets, None, log.append,
                                           memory_gb=1.0, directory=tmp_path / "cache")  # fmt: skip
    assert not (tmp_path / "cache").exists() and len(log) == 1
    teacher_cache.cache_for_run(_mnist_teacher(), datasets, None, log.append, memory_gb=1e-6,
                                directory=tmp_path / "cache")  # fmt: skip
    assert (tmp_path / "cache" / "manifest.json").exists()
    pages = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert teacher_cache.default_memory_gb() == pytest.approx(pages / 4 / 2**30)
