"""The datasets fitnets_tf supports, and the paper's train / validation / test protocol on them."""

from __future__ import annotations

import dataclasses

from fitnets_tf.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the pipelines need to know about one dataset.

    The built-in datasets' are in :data:`DATASETS`; a user's data gets one when it is read
    (:func:`fitnets_tf.data.sources.read_user_data`).

    Attributes:
        name: key in :data:`DATASETS`, or the user's ``--dataset`` value.
        tfds_name: TFDS builder name; None for generated data and the user's files.
        input_shape: image shape ``(H, W, C)``.
        num_classes: number of labels.
        validation_size: examples held out from the end of the first training split, as the
            paper (CIFAR 40K/10K) and its code (MNIST 50K/10K) did (user data: as held out).
        train_splits: TFDS splits that form the training data (SVHN adds ``extra``).
        flips: whether horizontal flips preserve the label.
        preprocessing: the :class:`~fitnets_tf.preprocessing.Preprocessor` mode used for
            ``preprocessing="auto"``.
        class_names: the labels' names in label order, where known (user folders, TFDS).
        holdout: how a user's folder or ``.npz`` file's held-out examples were drawn (a
            :data:`~fitnets_tf.data.holdout.HOLDOUT_METHODS` name); None where they are the
            last examples (the built-in and prepared TFDS datasets).
        formatting: how the user's data was brought to ``input_shape``, where the reader
            knows: ``size_from`` (words: where the size came from) and, a folder's, how many
            images were ``resized``, converted ``grayscale_to_rgb`` or had their
            ``alpha_dropped`` (:meth:`~fitnets_tf.data.folder_format.FolderFormat.summary`);
            None: the built-in datasets, whose size is their own.
    """

    name: str
    tfds_name: str | None
    input_shape: tuple[int, int, int]
    num_classes: int
    validation_size: int
    train_splits: tuple[str, ...] = ("train",)
    flips: bool = False
    preprocessing: str = "scale"
    class_names: tuple[str, ...] | None = None
    holdout: str | None = None
    formatting: dict | None = dataclasses.field(default=None, hash=False, compare=False)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("mnist", "mnist", (28, 28, 1), 10, 10_000),
        DatasetSpec("fashion_mnist", "fashion_mnist", (28, 28, 1), 10, 10_000, flips=True),
        DatasetSpec("cifar10", "cifar10", (32, 32, 3), 10, 10_000, flips=True,
                    preprocessing="gcn_zca"),
        DatasetSpec("cifar100", "cifar100", (32, 32, 3), 100, 10_000, flips=True,
                    preprocessing="gcn_zca"),
        # Goodfellow et al.'s SVHN protocol (followed by the paper) trains on train + extra and
        # validates on 6,000 examples; they drew them class-balanced from both splits, here
        # they are simply the last 6,000 of `train`. Their local contrast normalisation is not
        # implemented: "auto" scales to [0, 1].
        DatasetSpec("svhn_cropped", "svhn_cropped", (32, 32, 3), 10, 6_000,
                    train_splits=("train", "extra")),
        # Generated, deterministic: 1,280 train(+validation) and 256 test examples.
        DatasetSpec("synthetic", None, (28, 28, 1), 10, 256),
    )
}  # fmt: skip


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``.

    Raises:
        ConfigError: ``name`` is not a key of :data:`DATASETS`.
    """
    if name not in DATASETS:
        raise ConfigError(f"`name` must be one of {sorted(DATASETS)}. Received: name={name!r}")
    return DATASETS[name]


def held_out_size(spec: DatasetSpec, validation_size: int | None, retrain_on_all: bool) -> int:
    """How many training examples are held out for validation (0: none).

    Raises:
        ConfigError: ``validation_size`` is not None or an int >= 0.
    """
    size = spec.validation_size if validation_size is None else validation_size
    if not isinstance(size, int) or size < 0:
        raise ConfigError(f"`validation_size` must be an int >= 0. Received: {validation_size!r}")
    return 0 if retrain_on_all else size


def split_names(
    name: str, validation_size: int | None = None, retrain_on_all: bool = False
) -> tuple[str, str | None, str]:
    """TFDS split strings ``(train, validation, test)`` for the paper's protocol.

    The validation examples are the last ``validation_size`` of the first training split
    (``None`` = the paper's size); with ``retrain_on_all`` (or a size of 0) there is no
    validation split and all training data is used, as in the paper's final runs.
    """
    spec = get_spec(name)
    size = held_out_size(spec, validation_size, retrain_on_all)
    if size == 0:
        return "+".join(spec.train_splits), None, "test"
    first, *rest = spec.train_splits
    return "+".join([f"{first}[:-{size}]", *rest]), f"{first}[-{size}:]", "test"
