"""The paper's datasets through TensorFlow Datasets (TFDS), offline unless asked otherwise.

A dataset that is neither prepared under ``data_dir`` nor present as source files in TFDS's
manual dir (``<data_dir>/downloads/manual``) raises
:class:`~fitnets_tf.errors.DatasetNotFoundError` at once, instead of TFDS's minutes of download
retries.
"""

from __future__ import annotations

import os
import pathlib

import tensorflow as tf
import tensorflow_datasets as tfds

from fitnets_tf.data.fashion_mnist import DEBIAN_FASHION_MNIST_DIR, stage_fashion_mnist
from fitnets_tf.data.locations import manual_dir, resolve_data_dir
from fitnets_tf.data.specs import DatasetSpec, get_spec
from fitnets_tf.errors import ConfigError, DatasetNotFoundError


def ensure_prepared(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = False,
    fashion_mnist_dir: str | os.PathLike = DEBIAN_FASHION_MNIST_DIR,
) -> tfds.core.DatasetBuilder:
    """Returns the TFDS builder of ``name``, preparing it from local files when needed.

    Order: a dataset already prepared under ``data_dir``; else the source files in
    ``<data_dir>/downloads/manual`` (for Fashion-MNIST, first staged there from
    ``fashion_mnist_dir``); else, only with ``download=True``, TFDS's download. Checksums are
    verified by TFDS in every case.

    Raises:
        DatasetNotFoundError: within seconds, listing where it looked and how to fix it.
    """
    spec = get_spec(name)
    if spec.tfds_name is None:
        raise ConfigError(f"{name!r} is generated, not a TFDS dataset.")
    data_dir = resolve_data_dir(data_dir)
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    if builder.is_prepared():
        check_complete(builder, name)
        return builder
    sources = manual_dir(data_dir)
    filenames = [info.filename for info in builder.url_infos.values()]
    debian = pathlib.Path(fashion_mnist_dir)
    if name == "fashion_mnist" and all((debian / f).exists() for f in filenames):
        stage_fashion_mnist(data_dir, debian)
    missing = [f for f in filenames if not (sources / f).exists()]
    if missing and not download:
        raise DatasetNotFoundError(_not_found_message(builder, spec, data_dir, missing, debian))
    # With every file in manual_dir, TFDS reads them and never touches the network.
    config = tfds.download.DownloadConfig(manual_dir=os.fspath(sources))
    builder.download_and_prepare(download_config=config)
    return builder


def check_complete(builder: tfds.core.DatasetBuilder, name: str) -> None:
    """Refuses a prepared dataset whose split files are missing or cut short.

    TFDS counts a dataset as prepared once its ``dataset_info.json`` is there; a half-copied
    folder would then fail only when a split is read, the test split after all the training.

    Raises:
        DatasetNotFoundError: naming the files and how to restore them.
    """
    problems = []
    for split in builder.info.splits.values():
        paths = [pathlib.Path(os.fspath(path)) for path in split.filepaths]
        missing = [path.name for path in paths if not path.is_file()]
        if missing:
            problems.append(f"{split.name}: missing {', '.join(missing)}")
            continue
        # TFRecord files hold each record plus 16 bytes of framing: never less than recorded.
        size = sum(path.stat().st_size for path in paths)
        recorded = int(split.num_bytes)
        if builder.info.file_format == tfds.core.FileFormat.TFRECORD and size < recorded:
            problems.append(f"{split.name}: {size} bytes, less than the {recorded} recorded")
    if problems:
        raise DatasetNotFoundError(
            f"Dataset {name!r} in {builder.data_path} is incomplete ({'; '.join(problems)}): "
            f"copy the whole folder {builder.data_path} again, or rebuild it with `tfds build "
            f"{builder.name} --data_dir=DIR` on a machine with internet."
        )


def read_splits(
    builder: tfds.core.DatasetBuilder, splits: dict[str, str | None]
) -> dict[str, tf.data.Dataset]:
    """``{key: raw (uint8 image, label) examples}`` of each TFDS split string that is not None.

    In the split's file order (``shuffle_files=False``): the pipelines shuffle, seeded.
    """
    return {
        key: builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        for key, split in splits.items()
        if split is not None
    }


def _not_found_message(
    builder, spec: DatasetSpec, data_dir: pathlib.Path, missing: list[str], debian: pathlib.Path
) -> str:
    sources = manual_dir(data_dir)
    urls = {info.filename: url for url, info in builder.url_infos.items()}
    lines = [
        f"Dataset {spec.name!r} (TFDS {builder.name} {builder.version}) is not available "
        "offline, and nothing is downloaded unless download=True. Looked for:",
        f"  - a prepared dataset in {builder.data_path} (dataset_info.json): not found",
        f"  - source files in TFDS's manual dir {sources}: missing {', '.join(missing)}",
    ]
    if spec.name == "fashion_mnist":
        lines.append(f"  - the Debian package dataset-fashion-mnist's files in {debian}: not found")
    lines += [
        "To fix it, one of:",
        f"  - on a machine with internet: `tfds build {builder.name} --data_dir=DIR`, then copy "
        f"DIR/{builder.name} to {data_dir}/ (or pass --data_dir / data_dir= pointing at DIR);",
        f"  - download {', '.join(urls[f] for f in missing)} into {sources}/ "
        "(TFDS verifies their checksums);",
        f"  - from Python, on a machine with internet: fitnets_tf.data.load({spec.name!r}, "
        f"data_dir={str(data_dir)!r}, download=True) (the command line never downloads).",
    ]
    if spec.name == "fashion_mnist":
        lines.append(
            "  - `apt-get install dataset-fashion-mnist` (or pass fashion_mnist_dir= to its files)."
        )
    return "\n".join(lines)
