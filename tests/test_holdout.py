"""The held-out draw of a user's data (fitnets_tf.data.holdout) and how a run keeps its own.

The pinned "random" numbers were computed with the code before the stratified draw existed:
runs started then must resume, and be exported, on the very same examples.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from fitnets_tf import builders, data, experiment
from fitnets_tf.config import ExperimentConfig
from fitnets_tf.data import holdout
from fitnets_tf.errors import ConfigError, DataError
from fitnets_tf.export import quantize
from fitnets_tf.preprocessing import Preprocessor
from fitnets_tf.run import data_record, layout
from fitnets_tf.search import session

# 10 / 5 / 1 examples of labels 0 / 1 / 2.
IMBALANCED = np.repeat([0, 1, 2], [10, 5, 1])


# ------------------------------------------------------------------------------ the draws


@pytest.mark.parametrize(
    "count, per_class",
    [
        (1, [1, 0, 0]),  # shares 0.625, 0.3125, 0.0625: the largest first
        (2, [1, 1, 0]),  # 1.25, 0.625, 0.125: floors 1, 0, 0, then the largest remainder
        (4, [3, 1, 0]),  # 2.5, 1.25, 0.25
        (8, [5, 3, 0]),  # 5, 2.5, 0.5: the lone example stays (a tie it does not win)
        (13, [9, 4, 0]),  # n - K: one of each class left to train on
        (14, [9, 4, 1]),  # past n - K the total wins: the lone example is drawn whole
        (16, [10, 5, 1]),
    ],
)
def test_stratified_counts_are_shares_by_largest_remainder(count, per_class):
    got = holdout.stratified_counts(IMBALANCED, count)
    assert got.tolist() == per_class and got.sum() == count


def test_stratified_counts_break_ties_by_class_size_then_label():
    # Shares 1.5, 2.5, 1: remainders 0.5 and 0.5, the larger class takes the one left.
    assert holdout.stratified_counts(np.repeat([0, 1, 2], [3, 5, 2]), 5).tolist() == [1, 3, 1]
    # Shares 0.6, 1.8, 0.6: the 0.8 first, then of two classes of one size the lower label.
    assert holdout.stratified_counts(np.repeat([0, 1, 2], [2, 6, 2]), 3).tolist() == [1, 2, 0]
    with pytest.raises(ConfigError, match="`count` must be an int from 0 to the 16 examples"):
        holdout.stratified_counts(IMBALANCED, 17)


def test_stratified_counts_on_many_label_sets_keep_the_total_and_one_of_each_class():
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = rng.integers(1, 30, rng.integers(2, 8))
        labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
        n, k = len(labels), len(sizes)
        count = int(rng.integers(0, n))
        held = holdout.stratified_counts(labels, count)
        assert held.sum() == count
        assert (held >= count * sizes // n).all()  # every class gives its share, rounded down
        if count <= n - k:
            assert (held <= sizes - 1).all()  # and keeps one example to train on
        else:
            assert (held <= sizes).all() and (held == sizes).sum() == count - (n - k)


def test_stratified_hold_out_takes_each_class_share_in_a_mixed_order():
    images = np.arange(16) * 10
    kept, held = holdout.hold_out((images, IMBALANCED), 4, "stratified")
    assert np.bincount(held[1], minlength=3).tolist() == [3, 1, 0]
    assert np.bincount(kept[1], minlength=3).tolist() == [7, 4, 1]
    # Pinned: the draw is seeded by SPLIT_SEED, and both parts are in one permutation's order.
    assert held[0].tolist() == [20, 110, 30, 0]
    assert kept[0].tolist() == [100, 40, 70, 50, 140, 120, 60, 90, 130, 80, 10, 150]
    assert sorted(np.concatenate([kept[0], held[0]]).tolist()) == images.tolist()
    again = holdout.hold_out((images, IMBALANCED), 4, "stratified")
    assert [a.tolist() for part in again for a in part] == [
        a.tolist() for part in (kept, held) for a in part
    ]


def test_random_hold_out_is_the_draw_runs_started_with_bit_for_bit():
    # Computed with hold_out and user_splits as they were before "stratified" existed.
    kept, held = holdout.hold_out((np.arange(20), np.arange(20) % 3), 4, "random")
    assert held[0].tolist() == [4, 19, 6, 2]
    assert kept[0].tolist() == [13, 16, 3, 11, 10, 8, 0, 12, 7, 5, 18, 17, 14, 9, 1, 15]
    splits = holdout.user_splits((np.arange(40), np.arange(40) % 4), holdout="random")
    assert splits["validation"][0].tolist() == [18, 15, 5, 3]
    assert splits["test"][0].tolist() == [11, 27, 4, 24]
    assert splits["train"][0][:6].tolist() == [34, 25, 13, 32, 30, 2]
    given = (np.arange(3), np.arange(3))
    splits = holdout.user_splits((np.arange(16), IMBALANCED), given, validation_size=3,
                                 holdout="random")  # fmt: skip
    assert splits["validation"][0].tolist() == [2, 11, 3]  # class 1 (5 of 16) gets none


def test_stratified_user_splits_keep_the_data_proportions_and_every_class():
    splits = holdout.user_splits((np.arange(16), IMBALANCED))  # the default draw
    sizes = {split: np.bincount(y, minlength=3).tolist() for split, (_, y) in splits.items()}
    # Test: 2 of 16 (shares 1.25, 0.625, 0.125); validation: 1 of the 14 left.
    assert sizes == {"train": [8, 4, 1], "validation": [1, 0, 0], "test": [1, 1, 0]}


@pytest.mark.parametrize(
    "labels, method, reason",
    [
        # Ten classes of one example: holding any out leaves fewer examples than classes.
        (np.arange(10), "stratified", "drawn per class, keeping one of each class to train on"),
        # 19 of one class, 1 of another: the seeded random draw takes the lone one.
        (np.array([1] * 19 + [0]), "random", r"a random draw \(holdout='random'"),
    ],
)
def test_a_class_drawn_whole_is_refused_saying_why(labels, method, reason):
    message = rf"Class label 0 has no training example left: the held-out examples are {reason}"
    with pytest.raises(DataError, match=message + r".*\(0 in validation, 1 in test\)"):
        holdout.user_splits((np.arange(len(labels)), labels), holdout=method)
    if method == "random":  # the same data drawn per class keeps the lone example
        holdout.user_splits((np.arange(len(labels)), labels))


def test_an_unknown_draw_is_refused_before_any_data_is_read(tmp_path):
    with pytest.raises(ConfigError, match=r"one of stratified_mixed, .*holdout='per_class'"):
        data.load(f"npz:{tmp_path / 'absent.npz'}", holdout="per_class")
    # The built-in datasets hold out their last examples: the draw does not apply to them.
    assert data.load("synthetic", holdout="random").spec.holdout is None


# ------------------------------------------------------------------- a run keeps its draw


def write_npz(tmp_path):
    """30 training images of labels 0/1/2 (16/9/5), 6 test images: 4x4 pixels, all distinct."""
    x = np.random.default_rng(3).integers(0, 256, (36, 4, 4), dtype=np.uint8)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x[:30], y_train=np.repeat([0, 1, 2], [16, 9, 5]), x_test=x[30:],
             y_test=np.arange(6) % 3)  # fmt: skip
    return path, x


def old_record(path) -> dict:
    """The data.json a run on ``write_npz``'s file wrote before the draw was stratified."""
    return {
        "dataset": f"npz:{path}", "input_shape": [4, 4, 1], "class_names": None,
        "examples": {"train": 27, "validation": 3, "test": 6},
        "train_labels_sha256": "989210fff8f4bf6abbb52e734c1ed71a7f57ff6e2181e134613ccdc5ac3b34e5",
    }  # fmt: skip


def test_a_new_run_records_the_stratified_draw(tmp_path):
    path, _ = write_npz(tmp_path)
    run = layout.RunLayout(tmp_path / "run")
    run.root.mkdir()
    config = ExperimentConfig().with_values(dataset=f"npz:{path}")
    loaded = experiment.Experiment(config, run).load_data()
    record = json.loads(run.data.read_text())
    assert record["holdout"] == "stratified_mixed" == loaded.spec.holdout
    # Validation: 3 of 30, by shares 1.6 / 0.9 / 0.5 (the random draw took labels 0, 0, 2).
    validation = np.concatenate([y for _, y in loaded.validation.as_numpy_iterator()])
    assert np.bincount(validation, minlength=3).tolist() == [2, 1, 0]
    assert record["train_labels_sha256"] != old_record(path)["train_labels_sha256"]
    assert "holdout" not in data_record.record(data.load("synthetic"))  # no draw to record


def test_a_run_recorded_before_the_method_resumes_with_its_random_draw(tmp_path):
    path, _ = write_npz(tmp_path)
    run = layout.RunLayout(tmp_path / "run")
    run.root.mkdir()
    run.data.write_text(json.dumps(old_record(path)))
    config = ExperimentConfig().with_values(dataset=f"npz:{path}")
    loaded = experiment.Experiment(config, run).load_data()  # its record check passes
    assert loaded.spec.holdout == "random"
    assert json.loads(run.data.read_text()) == old_record(path)  # left as it was
    # The draw is a property of the run: loading it another way is refused, naming it.
    with pytest.raises(DataError, match=r"holdout random then, stratified_mixed now.*"
                       r"Load it with the run's own draw, holdout='random'"):  # fmt: skip
        data_record.check_same(run.data, data.load(f"npz:{path}"))


def test_the_draw_is_read_from_the_record_before_the_data(tmp_path):
    record = tmp_path / "data.json"
    assert data_record.holdout_of(record) == "stratified_mixed"  # a new run
    assert data_record.holdout_of(record, started=True) == "random"  # a run before records
    record.write_text(json.dumps({"dataset": "npz:x"}))
    assert data_record.holdout_of(record) == "random"  # a record before the method
    record.write_text(json.dumps({"dataset": "npz:x", "holdout": "stratified"}))
    assert data_record.holdout_of(record, started=True) == "stratified"


def test_a_new_run_takes_the_draw_of_its_teacher_run(tmp_path):
    path, _ = write_npz(tmp_path)
    teacher_run = layout.RunLayout(tmp_path / "teacher_run")
    teacher_run.teacher.parent.mkdir(parents=True)
    teacher_run.teacher.write_bytes(b"a trained teacher")
    teacher_run.data.write_text(json.dumps(old_record(path)))
    config = ExperimentConfig().with_values(
        dataset=f"npz:{path}", teacher_path=str(teacher_run.root)
    )
    new_run = tmp_path / "run" / "data.json"
    # Its teacher trained on the random draw's training images: so does this run's split.
    assert builders.run_holdout(config, new_run) == "random"
    as_file = config.with_values(teacher_path=str(teacher_run.teacher))
    assert builders.run_holdout(as_file, new_run) == "random"  # RUN/teacher/teacher.keras
    other = config.with_values(dataset=f"npz:{tmp_path / 'other.npz'}")
    assert builders.run_holdout(other, new_run) == "stratified_mixed"  # another dataset's draw
    (tmp_path / "mine.keras").write_bytes(b"a teacher of no run")
    alone = config.with_values(teacher_path=str(tmp_path / "mine.keras"))
    assert builders.run_holdout(alone, new_run) == "stratified_mixed"
    new_run.parent.mkdir()
    new_run.write_text(json.dumps({"holdout": "stratified"}))
    assert builders.run_holdout(config, new_run) == "stratified"  # a run keeps its own


def test_the_teacher_runs_data_is_the_same_however_its_path_is_written(tmp_path, monkeypatch):
    # The --dataset strings were compared as text: the same file written relative to where
    # each run started, or with a trailing slash, drew anew (the teacher's training images).
    path, _ = write_npz(tmp_path)
    teacher_run = layout.RunLayout(tmp_path / "teacher_run")
    teacher_run.teacher.parent.mkdir(parents=True)
    teacher_run.teacher.write_bytes(b"a trained teacher")
    teacher_run.data.write_text(json.dumps({**old_record(path), "dataset": f"npz:{path.name}"}))
    teacher_run.versions.write_text(json.dumps({"working_directory": str(tmp_path)}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    new_run = tmp_path / "run" / "data.json"
    for written in (f"npz:{path}", f"npz:../{path.name}"):
        config = ExperimentConfig().with_values(dataset=written, teacher_path=str(teacher_run.root))
        assert builders.run_holdout(config, new_run) == "random"
    other = ExperimentConfig().with_values(dataset=f"npz:{tmp_path / 'other.npz'}",
                                           teacher_path=str(teacher_run.root))  # fmt: skip
    assert builders.run_holdout(other, new_run) == holdout.DEFAULT_HOLDOUT


def test_a_search_records_the_draw_its_trials_validate_on(tmp_path):
    path, _ = write_npz(tmp_path)
    teacher = str(tmp_path / "teacher.keras")  # given: stage 1 has nothing to run for kd
    config = ExperimentConfig().with_values(
        dataset=f"npz:{path}", modes=("kd",), teacher_path=teacher
    )
    (tmp_path / "search").mkdir()
    record = session.stage_one(config, session.TuneOptions(), tmp_path / "search")
    assert record["holdout"] == "stratified_mixed"
    del record["holdout"]  # a search started before: its trials drew at random
    assert data_record.recorded_holdout(record) == "random"


def test_calibration_images_follow_the_runs_draw(tmp_path):
    path, x = write_npz(tmp_path)
    run = layout.RunLayout(tmp_path / "run")
    run.root.mkdir()
    run.flags.write_text(f"--dataset=npz:{path}\n--validation_size=3\n--resize_mode=crop\n")
    run.data.write_text(json.dumps(old_record(path)))
    source = quantize.calibration_source(run.root)
    assert source == {"name": f"npz:{path}", "holdout": "random", "retrain_on_all": False,
                      "validation_size": 3}  # fmt: skip
    got = quantize.calibration_images(source, Preprocessor(mode="scale"), count=5)
    # The old run's first training images, as its draw ordered them (pinned before the change).
    np.testing.assert_allclose(got[..., 0], x[[21, 10, 4, 28, 16]] / 255.0, rtol=1e-6)
    run.data.write_text(json.dumps({**old_record(path), "holdout": "stratified"}))
    source = quantize.calibration_source(run.root)
    new = quantize.calibration_images(source, Preprocessor(mode="scale"), count=5)
    stratified = data.load(f"npz:{path}", validation_size=3, preprocessing="none", limit=5)
    np.testing.assert_allclose(new, stratified.train_examples[0].numpy() / 255.0, rtol=1e-6)
    assert not np.allclose(new, got)


@pytest.mark.parametrize(
    ("split", "size", "fix"),
    [("test", None, r"your own test split \(a folder's test/ sub-folder, an npz file's x_test\)"),
     ("validation", 2, "a smaller --validation_size")],
)  # fmt: skip
def test_a_split_that_leaves_nothing_to_train_on_names_its_own_fix(split, size, fix):
    # The test split's message told to lower --validation_size, which plays no part in it.
    with pytest.raises(DataError, match=rf"Holding out \d {split} example\(s\) .* {fix}"):
        holdout.held_out_count(2 if size else 1, size, 0.1, split)


# ------------------------------------------------------- the splits the data gives, mixed


def write_given_splits(tmp_path):
    """An npz file with its own validation and test arrays, each in class order, and a folder
    of train/ validation/ test/: the pixels of class k are 80 * k, so an image names its class."""
    tmp_path.mkdir(exist_ok=True)
    y = {"train": np.repeat([0, 1, 2], 10), "val": np.repeat([0, 1, 2], 3)}
    y["test"] = y["val"]
    x = {split: np.broadcast_to(80 * labels[:, None, None], (len(labels), 2, 2)).astype(np.uint8)
         for split, labels in y.items()}  # fmt: skip
    np.savez(tmp_path / "given.npz", **{f"{k}_{s}": a[s] for k, a in (("x", x), ("y", y))
                                        for s in y})  # fmt: skip
    for split, folder in (("train", "train"), ("val", "validation"), ("test", "test")):
        for i, (image, label) in enumerate(zip(x[split], y[split], strict=True)):
            class_folder = tmp_path / folder / ("cat", "dog", "eel")[label]
            class_folder.mkdir(parents=True, exist_ok=True)
            (class_folder / f"{i}.png").write_bytes(tf.io.encode_png(image[..., None]).numpy())
    return {"npz": f"npz:{tmp_path / 'given.npz'}", "folder": f"folder:{tmp_path}"}


@pytest.mark.parametrize("source", ["npz", "folder"])
@pytest.mark.parametrize("held_out", [{}, {"validation_size": 0}, {"retrain_on_all": True}])
def test_the_first_examples_of_a_given_split_mix_the_classes(tmp_path, source, held_out):
    # The splits the data gives were kept in its order, by class: --limit=6 gave one class.
    name = write_given_splits(tmp_path)[source]
    limited = data.load(name, limit=6, batch_size=6, **held_out)
    for split in ("train", "validation", "test"):
        if getattr(limited, split) is None:
            continue
        labels = np.concatenate([y for _, y in getattr(limited, split).as_numpy_iterator()])
        assert len(labels) == 6 and set(labels.tolist()) == {0, 1, 2}, split
    # One permutation seeded by SPLIT_SEED, as the drawn splits: the same for every run seed.
    everything = data.load(name, batch_size=9, seed=5, **held_out)
    mixed = np.random.default_rng(holdout.SPLIT_SEED).permutation(9)
    test = np.concatenate([y for _, y in everything.test.as_numpy_iterator()])
    np.testing.assert_array_equal(test, np.repeat([0, 1, 2], 3)[mixed])


def test_int8_calibration_of_a_folder_with_given_splits_sees_every_class(tmp_path):
    # Calibration reads the first training images: they were all of the first class.
    name = write_given_splits(tmp_path / "images")["folder"]
    run = layout.RunLayout(tmp_path / "run")
    run.root.mkdir()
    run.flags.write_text(f"--dataset={name}\n")
    experiment.Experiment(ExperimentConfig().with_values(dataset=name), run).load_data()
    source = quantize.calibration_source(run.root)
    images = quantize.calibration_images(source, Preprocessor(mode="scale"), count=6)
    assert sorted(set(np.rint(images.ravel() * 255).tolist())) == [0, 80, 160]
    # A run started before given splits were mixed: the same images, calibrated on mixed.
    record = json.loads(run.data.read_text())
    run.data.write_text(json.dumps({**record, "holdout": "stratified"}))
    source = quantize.calibration_source(run.root)
    assert source["holdout"] == "stratified_mixed"
    images = quantize.calibration_images(source, Preprocessor(mode="scale"), count=6)
    assert sorted(set(np.rint(images.ravel() * 255).tolist())) == [0, 80, 160]


def test_a_run_started_with_its_given_splits_in_order_resumes_on_them(tmp_path):
    # Its data.json (holdout "stratified") holds the sha256 of the training labels in the
    # file's order (class 0's, 1's, 2's): that run reads them so, a new one mixes them.
    name = write_given_splits(tmp_path)["npz"]
    run = layout.RunLayout(tmp_path / "run")
    run.root.mkdir()
    run.data.write_text(json.dumps({
        "dataset": name, "input_shape": [2, 2, 1], "class_names": None,
        "examples": {"train": 30, "validation": 9, "test": 9}, "holdout": "stratified",
        "train_labels_sha256": "8e5fc5618bbe5abb798b769fe68f3c691b2ba184e1da5c6155522cc7ea77de48",
    }))  # fmt: skip
    config = ExperimentConfig().with_values(dataset=name)
    loaded = experiment.Experiment(config, run).load_data()  # its record check passes
    assert loaded.spec.holdout == "stratified"
    np.testing.assert_array_equal(np.asarray(loaded.train_examples[1]), np.repeat([0, 1, 2], 10))
    (tmp_path / "new").mkdir()
    fresh = experiment.Experiment(config, layout.RunLayout(tmp_path / "new")).load_data()
    assert fresh.spec.holdout == holdout.DEFAULT_HOLDOUT != "stratified"
    assert set(np.asarray(fresh.train_examples[1])[:6].tolist()) == {0, 1, 2}
