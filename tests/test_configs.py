"""Every shipped flagfile parses, validates, and names a teacher/student pair that fits."""

import pathlib
import re

import pytest
from absl import flags

from fitnets_tf import data, distiller, models
from fitnets_tf.cli import flags as flag_lib
from fitnets_tf.cli import train  # noqa: F401  (defines the flags)
from fitnets_tf.config import ExperimentConfig
from fitnets_tf.errors import ConfigError

# Training flagfiles; tune_*.flags also hold tuner flags and are tested in test_tuner.py.
CONFIGS = sorted(
    p
    for p in (pathlib.Path(__file__).parent.parent / "configs").glob("*.flags")
    if not p.stem.startswith("tune_")
)


@pytest.fixture
def parsed():
    def parse(path):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train", f"--flagfile={path}"])
        return flag_lib.config_from_flags()

    yield parse
    flags.FLAGS.unparse_flags()


def test_every_paper_experiment_has_a_config():
    names = {p.stem for p in CONFIGS}
    assert {"fashion_mnist", "smoke", "cifar10_teacher", "cifar100", "svhn", "mnist"} <= names
    assert {f"cifar10_fitnet{i}" for i in (1, 2, 3, 4)} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_and_its_pair_fits(parsed, path):
    config = parsed(path)
    config.validate()
    (hint, guided), *_ = config.hint_pairs()
    spec = data.DATASETS[config.data.dataset]
    teacher = models.build(config.models.teacher, spec.input_shape, spec.num_classes)
    student = models.build(config.models.student, spec.input_shape, spec.num_classes)
    distiller.make_hint_path(teacher, student, hint, guided)  # raises if it cannot fit


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_config_that_trains_its_teacher_states_its_learning_rate(parsed, path):
    # The teacher's flag has a default of its own (0.001), not --learning_rate: mnist.flags,
    # written when it had none, trained its teacher at 0.001 instead of its paper's 0.0005.
    config = parsed(path)
    trains = "teacher" in config.runtime.stages and config.models.trained_teacher() is None
    if trains:
        assert "--teacher_learning_rate=" in path.read_text()


def test_paper_hyperparameters_in_cifar_configs(parsed):
    config = parsed(next(p for p in CONFIGS if p.stem == "cifar10_fitnet4"))
    hp = config.hyperparameters()
    assert (hp.temperature, hp.lambda_start, hp.lambda_end) == (3.0, 4.0, 1.0)
    assert (hp.lambda_hold, hp.lambda_epochs, hp.learning_rate) == (5, 395, 0.005)
    assert config.data.batch_size == 128 and config.data.augment
    assert config.schedule.early_stopping_patience == 100


# The paper's code bounds its hint regressor's kernels at 0.9 in every run (pylearn2's
# max_kernel_norm, set by its training script whatever the data): the paper's configs that train
# one say so; the others leave the regressor free.
BOUNDED_REGRESSOR = {"mnist", "svhn", "cifar100", *(f"cifar10_fitnet{i}" for i in (1, 2, 3, 4))}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_the_paper_configs_bound_the_regressor_as_its_code(parsed, path):
    config = parsed(path)
    bound = 0.9 if path.stem in BOUNDED_REGRESSOR else None
    assert config.models.regressor_bound() == config.hyperparameters().regressor_max_norm == bound
    assert bound is None or "fitnet" in config.schedule.modes


def test_a_config_bound_reaches_the_regressor_the_stages_build(parsed):
    from fitnets_tf import layers, stages

    config = parsed(next(p for p in CONFIGS if p.stem == "mnist"))
    teacher = models.build("mnist_teacher", (28, 28, 1), 10)
    student = models.build("mnist_fitnet", (28, 28, 1), 10)
    (hint, guided), *_ = config.hint_pairs()
    d = stages.make_distiller(teacher, student, config.hyperparameters(), hint, guided)
    assert isinstance(d.regressor, layers.MaxoutConv2D) and d.regressor.max_norm == 0.9
    assert d.regressor.kernel.constraint.get_config() == {"max_value": 0.9, "axis": [0, 1, 2]}
    free = stages.make_distiller(teacher, student, stages.Hyperparameters(), hint, guided)
    assert free.regressor.max_norm is None and free.regressor.kernel.constraint is None


def test_the_default_experiment_is_its_flagfile_and_the_base_of_a_bare_command(parsed):
    from fitnets_tf import config as config_lib

    path = pathlib.Path(__file__).parent.parent / "configs" / "fashion_mnist.flags"
    assert parsed(path) == config_lib.DEFAULT
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train"])
    assert flag_lib.config_from_flags(base=config_lib.DEFAULT) == config_lib.DEFAULT
    # Without a flagfile, flags change the default experiment, not the flags' defaults.
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", "--kd_epochs=3"])
    assert flag_lib.without_flagfile(["train", "--kd_epochs=3"])
    assert not flag_lib.without_flagfile(["train", f"--flagfile={path}"])
    # absl's other spellings: with one dash the default experiment went under the file's.
    for given in ([f"-flagfile={path}"], ["-flagfile", str(path)], ["--flagfile", str(path)]):
        assert not flag_lib.without_flagfile(["train", *given])
    assert flag_lib.without_flagfile(["train", "--", f"--flagfile={path}"])  # not a flag
    bare = flag_lib.config_from_flags(base=config_lib.DEFAULT)
    assert bare.schedule.kd_epochs == 3 and bare.models.student == "thin_cnn"
    assert flag_lib.config_from_flags().models.student == "mnist_fitnet"  # the flags' default


def test_naming_other_models_without_a_flagfile_drops_what_belongs_to_the_defaults():
    from fitnets_tf import config as config_lib

    def bare(*args):
        flags.FLAGS.unparse_flags()
        argv = ["train", *args]
        flags.FLAGS(argv)
        return flag_lib.config_from_command_line(argv)

    default = config_lib.DEFAULT.models
    assert default.teacher_path and default.hints
    assert "teacher" not in config_lib.DEFAULT.runtime.stages
    mine = bare("--teacher=mine.keras", "--student=student.keras", "--kd_epochs=3")
    # Its shipped teacher, the stages that skip training one and its layer names go; the
    # recipe stays.
    assert mine.models.teacher_path is None and mine.models.hints is None
    assert mine.runtime.stages == config_lib.FLAG_DEFAULTS.runtime.stages
    assert mine.schedule.optimizer == "sgd" and mine.schedule.kd_epochs == 3
    # The one-pair form is no longer "both forms" because of the default's pair.
    one = bare("--teacher=mine.keras", "--hint_layer=t_pool2", "--guided_layer=s_pool2")
    assert one.models.hints is None and one.models.hint_layer == "t_pool2"
    # Given options stay as given; a trained teacher by path keeps the stages (none trains it).
    kept = bare("--teacher_path=mine.keras", "--hints=auto")
    assert kept.models.hints == ("auto",)
    assert kept.runtime.stages == config_lib.DEFAULT.runtime.stages
    assert bare("--student=s.keras").models.teacher_path == default.teacher_path
    assert bare("--kd_epochs=3").models == default
    flags.FLAGS.unparse_flags()


def refused(*args) -> str:
    """The message of the ConfigError the command line ``train ARGS`` is refused with."""
    flags.FLAGS.unparse_flags()
    argv = ["train", *args]
    try:
        flags.FLAGS(argv)
        with pytest.raises(ConfigError) as info:
            flag_lib.validated_command_line(argv)
    finally:
        flags.FLAGS.unparse_flags()
    return str(info.value)


def test_a_refused_bare_command_names_the_values_it_took_from_the_default_experiment():
    # `--optimizer=adam` alone meets the default's SGD momentum, Nesterov and weight decay:
    # the message told the user to "drop" a momentum they never gave.
    message = refused("--optimizer=adam", "--momentum=0.5")
    assert "adam takes no momentum" in message
    note = message[message.index("(--") :]
    assert "--nesterov" in note and "--weight_decay=0.01" in note and "default experiment's" in note
    assert "--momentum" not in note  # given: the user's own value, not the default's
    # With a flagfile, nothing is inherited from the default experiment: no note.
    assert "default experiment" not in refused(
        "--flagfile=configs/smoke.flags", "--optimizer=adam", "--momentum=0.5"
    )


def test_the_note_names_no_inherited_flag_the_message_is_not_about(tmp_path):
    # An ONNX teacher meets --mode=fitnet,kd,scratch (every flag's own default too): the note
    # named --teacher=wide_cnn, because the message says "teacher".
    onnx = tmp_path / "teacher.onnx"
    onnx.write_bytes(b"")
    message = refused(f"--teacher_path={onnx}")
    assert "and --mode fitnet trains from hints" in message
    assert "--teacher=" not in message and "default experiment" not in message


@pytest.mark.parametrize(("values", "message"), [
    ({"teacher_path": "net.pt"}, "'net.pt' is a PyTorch file, which TensorFlow cannot run: "
                                 "export the teacher to ONNX (PyTorch 2.9 or later: "
                                 "torch.onnx.export("),
    ({"teacher": "net.pth"}, "and give --teacher_path=teacher.onnx"),
    ({"student": "net.safetensors"}, "'net.safetensors' is a PyTorch file, whose model cannot "
                                     "be trained here: build the student in Keras"),
])  # fmt: skip
def test_a_pytorch_file_is_refused_with_the_way_to_bring_it(values, message):
    # It was read as a .keras file: "it is damaged, or not a .keras file ... Restore it from a
    # backup", after the data was loaded.
    with pytest.raises(ConfigError, match=re.escape(message)):
        ExperimentConfig.from_values(values).validate()


def test_the_pytorch_export_advised_is_the_default_exporters_in_one_file():
    # It advised dynamic_axes, which PyTorch 2.9's default (dynamo) exporter warns against,
    # and no external_data=False: the weights went to teacher.onnx.data, easily left behind.
    with pytest.raises(ConfigError, match=re.escape(
        "export the teacher to ONNX (PyTorch 2.9 or later: torch.onnx.export(model.eval(), "
        "(torch.zeros(1, C, H, W),), 'teacher.onnx', dynamic_shapes=({0: 'batch'},), "
        "external_data=False); before: dynamic_axes={'input': {0: 'batch'}}, "
        "input_names=['input'] instead of dynamic_shapes and external_data) and give "
        "--teacher_path=teacher.onnx."
    )):  # fmt: skip
        ExperimentConfig.from_values({"teacher_path": "net.pt"}).validate()


def test_the_seed_is_refused_where_numpy_and_tensorflow_would_fail_on_it():
    from fitnets_tf.config import ExperimentConfig

    base = ExperimentConfig()
    base.with_values(seed=2**31 - 1).validate()
    with pytest.raises(ConfigError, match="seed must be >= 0, got -1"):
        base.with_values(seed=-1).validate()
    with pytest.raises(ConfigError, match="seed must be <= 2147483647, got 4294967296"):
        base.with_values(seed=2**32).validate()
