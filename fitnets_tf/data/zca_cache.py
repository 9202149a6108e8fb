"""The fitted ZCA constants of a dataset, stored once and read back by every later run.

Fitting ZCA on CIFAR's 40K training images takes a while; the constants depend only on the
data and the preprocessing parameters, so they are cached in
``<cache_dir or data_dir/fitnets_tf_cache>/<dataset>_<hash>.npz``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pathlib
import zipfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from fitnets_tf.data.locations import resolve_data_dir
from fitnets_tf.preprocessing import Preprocessor
from fitnets_tf.run.io import write_bytes


def default_cache_dir(data_dir: str | os.PathLike | None) -> pathlib.Path:
    """``<data_dir>/fitnets_tf_cache``, beside the prepared TFDS datasets it was fitted on."""
    return resolve_data_dir(data_dir) / "fitnets_tf_cache"


def fit_zca_cached(
    preprocessor: Preprocessor,
    raw_train: tf.data.Dataset,
    key: dict,
    cache_dir: str | os.PathLike | None,
) -> None:
    """Loads the ZCA constants for ``key`` from ``cache_dir`` or fits and stores them.

    Args:
        preprocessor: a ``gcn_zca`` :class:`Preprocessor`, fitted in place.
        raw_train: the raw training examples it is fitted on.
        key: everything the constants depend on besides the preprocessing parameters
            (``dataset`` names the file).
        cache_dir: where the ``.npz`` files live; None fits without caching.
    """
    config = preprocessor.get_config()
    params = {k: config[k] for k in ("mode", "gcn_scale", "filter_bias", "min_divisor")}
    key_json = json.dumps({**key, **params}, sort_keys=True)
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256(key_json.encode()).hexdigest()[:16]
        path = pathlib.Path(cache_dir).expanduser() / f"{key['dataset']}_{digest}.npz"
        if _read_cached(path, key_json, preprocessor):
            return
    images = np.concatenate([x for x, _ in tfds.as_numpy(raw_train.batch(4096))])
    preprocessor.adapt(images)
    if path is not None:
        mean, whitening = (w.numpy() for w in (preprocessor.zca_mean, preprocessor.zca_whitening))
        buffer = io.BytesIO()
        np.savez(buffer, key=key_json, mean=mean, whitening=whitening)
        # Only a cache: a read-only (shared) data directory or a full disk costs the next run
        # this fit again, not this run its training.
        with contextlib.suppress(OSError):
            write_bytes(path, buffer.getvalue())


def _read_cached(path: pathlib.Path, key_json: str, preprocessor: Preprocessor) -> bool:
    """Sets ``preprocessor``'s ZCA from ``path`` if it holds ``key_json``'s; a damaged or
    unreadable file is fitted again, as a missing one."""
    try:
        with np.load(path) as cached:
            if str(cached["key"]) != key_json:  # guards against a changed format
                return False
            preprocessor.set_zca(cached["mean"], cached["whitening"])
            return True
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return False
