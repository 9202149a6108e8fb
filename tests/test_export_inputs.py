"""Tests of fitnets_tf.export.read_images: a client's image files are the pixels training saw."""

from __future__ import annotations

import json
import pathlib
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from fitnets_tf import data, export
from fitnets_tf.data import image_folder
from fitnets_tf.errors import DataError, ExportError
from fitnets_tf.export.verify import run_artifact
from fitnets_tf.run import data_record
from fitnets_tf.run.layout import RunLayout


def _png(path: pathlib.Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(pixels).numpy())


def _jpeg(path: pathlib.Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_jpeg(pixels, quality=90).numpy())


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[pathlib.Path, list[pathlib.Path]]:
    """train/ and test/ of classes a and b; most images 20x20, the test ones grayscale, RGB,
    RGBA and odd-size, PNG and JPEG. Returns the folder and its test files in Keras' order."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        for i in range(4):
            _png(root / "train" / name / f"{i}.png", rng.integers(0, 256, (20, 20, 3), np.uint8))
    smooth = np.linspace(0, 255, 33 * 17 * 3).reshape(33, 17, 3).astype(np.uint8)
    _png(root / "test" / "a" / "gray.png", rng.integers(0, 256, (20, 20, 1), np.uint8))
    _jpeg(root / "test" / "a" / "odd.jpg", smooth)  # 33x17: resized, as PIL resizes otherwise
    _png(root / "test" / "b" / "rgba.png", rng.integers(0, 256, (20, 20, 4), np.uint8))
    _jpeg(root / "test" / "b" / "wide_gray.jpeg", smooth[:12, :, :1])
    _png(root / "test" / "b" / "rgb.png", rng.integers(0, 256, (25, 31, 3), np.uint8))
    tests = [root / "test" / "a" / n for n in ("gray.png", "odd.jpg")]
    tests += [root / "test" / "b" / n for n in ("rgb.png", "rgba.png", "wide_gray.jpeg")]
    return root, tests


def _student(shape) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(3, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x), name="student")


def _run(workdir: pathlib.Path, root: pathlib.Path, flags: str, **options):
    """A run's files as training writes them for ``folder:root``, and its normalised data."""
    loaded = data.load(f"folder:{root}", holdout="stratified", batch_size=64, **options)
    files = RunLayout(workdir)
    workdir.mkdir()
    data_record.check_same(files.data, loaded)
    files.flags.write_text(f"--dataset=folder:{root}\n{flags}")
    raw = keras.Input(loaded.input_shape, name=export.INPUT_NAME)
    keras.Model(raw, loaded.preprocessor(raw)).save(files.preprocessor)
    _student(loaded.input_shape).save(files.student)
    return loaded


def _batch(ds: tf.data.Dataset) -> np.ndarray:
    return np.concatenate([x for x, _ in ds.as_numpy_iterator()])


@pytest.mark.parametrize(
    "flags, options",
    [("", {}), ("--channels=1\n", {"channels": 1}),
     ("--image_size=14,18\n--resize_mode=pad\n", {"image_size": (14, 18), "resize_mode": "pad"})],
    ids=["as_read", "converted_to_gray", "padded"],
)  # fmt: skip
def test_files_read_for_serving_are_the_pixels_training_saw(tmp_path, folder, flags, options):
    root, tests = folder
    loaded = _run(tmp_path / "run", root, flags, **options)
    pixels = _batch(data.load(f"folder:{root}", holdout="stratified", preprocessing="none",
                              **options).test)  # fmt: skip
    raw = export.read_images(tmp_path / "run", tests, include_preprocessing=True)
    assert raw.dtype == np.float32 and raw.shape == (5, *loaded.input_shape)
    np.testing.assert_array_equal(raw, pixels)  # bit for bit
    normalised = export.read_images(tmp_path / "run", tests)
    np.testing.assert_array_equal(normalised, _batch(loaded.test))
    one = export.read_images(tmp_path / "run", str(tests[1]), include_preprocessing=True)
    np.testing.assert_array_equal(one, pixels[1:2])
    # What an antialiasing resize (PIL's bilinear) gives instead: whole grey levels apart.
    odd = tf.io.decode_jpeg(tests[1].read_bytes(), channels=loaded.input_shape[-1])
    antialiased = tf.image.resize(odd, loaded.input_shape[:2], antialias=True)
    assert np.abs(raw[1] - antialiased).max() > 1


@pytest.mark.parametrize("fmt", ["litert", "saved_model"])
def test_an_exported_model_on_files_predicts_as_the_student_on_the_pipeline(tmp_path, folder, fmt):
    root, tests = folder
    loaded = _run(tmp_path / "run", root, "")
    student = keras.saving.load_model(tmp_path / "run" / "student.keras")
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(student(_batch(loaded.test))))
    path = export.export_student(tmp_path / "run", format=fmt, include_preprocessing=True)
    got = run_artifact(path, fmt, export.read_images(tmp_path / "run", tests,
                                                     include_preprocessing=True))  # fmt: skip
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_bad_files_and_runs_are_named(tmp_path, folder):
    root, tests = folder
    _run(tmp_path / "run", root, "")
    with pytest.raises(DataError, match=r"missing.png does not exist"):
        export.read_images(tmp_path / "run", [tests[0], tmp_path / "missing.png"])
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match=r"Cannot decode the image file .*notes.png"):
        export.read_images(tmp_path / "run", tmp_path / "notes.png")
    (tmp_path / "run" / "preprocessor.keras").unlink()
    with pytest.raises(ExportError, match=r"preprocessor.keras\) is missing.*include_preproc"):
        export.read_images(tmp_path / "run", tests[0])
    (tmp_path / "run" / "data.json").unlink()
    with pytest.raises(ExportError, match=r"data.json does not exist or records no input_shape"):
        export.read_images(tmp_path / "run", tests[0], include_preprocessing=True)


def test_a_folder_run_recorded_before_its_decoded_channels_still_reads_its_files(tmp_path, folder):
    root, tests = folder
    loaded = _run(tmp_path / "run", root, "")
    record = json.loads((tmp_path / "run" / "data.json").read_text())
    del record["formatting"]["decoded_channels"]
    (tmp_path / "run" / "data.json").write_text(json.dumps(record))
    raw = export.read_images(tmp_path / "run", tests, include_preprocessing=True)
    np.testing.assert_array_equal(raw / 255.0, _batch(loaded.test))
    # Trained in grayscale by --channels=1: its folder may have been decoded gray or RGB.
    (tmp_path / "run" / "flags.txt").write_text(f"--dataset=folder:{root}\n--channels=1\n")
    record["input_shape"] = [20, 20, 1]
    (tmp_path / "run" / "data.json").write_text(json.dumps(record))
    with pytest.raises(ExportError, match=r"decoded as RGB or grayscale.*read_image"):
        export.read_images(tmp_path / "run", tests)


def _cut_jpeg() -> bytes:
    """A JPEG cut in its tables: libjpeg prints "Improper call to JPEG library in state 201"."""
    jpeg = tf.io.encode_jpeg(np.zeros((8, 8, 1), np.uint8)).numpy()
    return jpeg[: len(jpeg) // 2]


def test_every_file_that_cannot_be_decoded_is_named_at_once(tmp_path, folder, capfd):
    # As a folder's images are: a client with several bad files fixes them in one re-run, and
    # the decoder's own lines, which name no file, are not printed.
    root, tests = folder
    _run(tmp_path / "run", root, "")
    bad = {tmp_path / "cut.jpg": _cut_jpeg(), tmp_path / "notes.png": b"not an image",
           tmp_path / "empty.jpg": b""}  # fmt: skip
    for path, content in bad.items():
        path.write_bytes(content)
    capfd.readouterr()
    with pytest.raises(DataError, match=r"Cannot decode 3 of the 5 image files:\n") as error:
        export.read_images(tmp_path / "run", [tests[0], *bad, tests[1]])
    message = str(error.value)
    reasons = ("jpeg::Uncompress", "Unknown image file format", "Input is empty")
    for path, reason in zip(bad, reasons, strict=True):
        assert f"\n  {path} ({reason}" in message, message
    assert "BMP, GIF, JPEG and PNG" in message and str(tests[0]) not in message
    assert "Improper call" not in capfd.readouterr().err


def test_every_missing_file_is_named_at_once_before_any_is_decoded(tmp_path, folder):
    root, tests = folder
    _run(tmp_path / "run", root, "")
    (tmp_path / "notes.png").write_text("not an image")  # not decoded: the missing come first
    missing = [tmp_path / "gone.png", tmp_path / "lost.jpg"]
    with pytest.raises(DataError, match=r"2 of the 4 paths given do not exist:\n") as error:
        export.read_images(tmp_path / "run", [missing[0], tmp_path / "notes.png", *tests[:1],
                                              missing[1]])  # fmt: skip
    assert all(f"\n  {path}" in str(error.value) for path in missing)
    assert "notes.png" not in str(error.value)


def test_a_folder_is_read_as_its_image_files_at_any_depth(tmp_path, folder):
    # As a class folder is listed: its sub-folders' images too, in Keras' order, and the files
    # that are not images (macOS's .DS_Store, Windows' Thumbs.db, notes) left out.
    root, tests = folder
    _run(tmp_path / "run", root, "")
    given = tmp_path / "served"
    shutil.copytree(root / "test", given)
    for junk in (".DS_Store", "Thumbs.db", "a/notes.txt"):
        (given / junk).write_bytes(b"\x00\x00\x00\x01Bud1")
    read = export.read_images(tmp_path / "run", given, include_preprocessing=True)
    assert [path.relative_to(given) for path in image_folder.image_files(given)] == [
        path.relative_to(root / "test") for path in tests
    ]
    np.testing.assert_array_equal(read, export.read_images(tmp_path / "run", tests,
                                                           include_preprocessing=True))  # fmt: skip
    both = export.read_images(tmp_path / "run", [tests[0], given], include_preprocessing=True)
    assert both.shape[0] == 6


def test_no_image_to_read_is_refused(tmp_path, folder):
    root, _ = folder
    _run(tmp_path / "run", root, "")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    with pytest.raises(DataError, match=r"empty holds no image \(files ending in .bmp"):
        export.read_images(tmp_path / "run", tmp_path / "empty")
    with pytest.raises(DataError, match=r"No image file given: give"):
        export.read_images(tmp_path / "run", [])
