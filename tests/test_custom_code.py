"""A user's model files with custom layers: --custom_modules, and the message when it is missing."""

import importlib
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import ROOT

from fitnets_tf import builders, custom_code
from fitnets_tf.config import ExperimentConfig, RuntimeConfig
from fitnets_tf.errors import ConfigError, ModelFileError
from fitnets_tf.models import sources

# A module of the user's, as their own code defines one: a registered layer and a registered
# subclassed model.
BLOCKS = textwrap.dedent('''
    import keras

    @keras.saving.register_keras_serializable(package="fitnets_test_blocks")
    class Block(keras.layers.Layer):
        def __init__(self, filters, **kwargs):
            super().__init__(**kwargs)
            self.filters = filters
            self.conv = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")

        def build(self, input_shape):
            self.conv.build(input_shape)

        def call(self, x):
            return self.conv(x)

        def get_config(self):
            return {**super().get_config(), "filters": self.filters}

    @keras.saving.register_keras_serializable(package="fitnets_test_blocks")
    class BlockNet(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.block = Block(4, name="net_block")
            self.gap = keras.layers.GlobalAveragePooling2D(name="net_gap")
            self.logits = keras.layers.Dense(10, name="net_logits")

        def call(self, x):
            return self.logits(self.gap(self.block(x)))
''')
REGISTERED = "fitnets_test_blocks>Block"
SMOKE = os.path.join(ROOT, "configs", "smoke.flags")


@pytest.fixture
def blocks_module(tmp_path, monkeypatch):
    """``my_blocks`` importable from ``tmp_path/code``; forgotten (module and class) afterwards."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "my_blocks.py").write_text(BLOCKS)
    monkeypatch.syspath_prepend(str(code))
    yield code
    sys.modules.pop("my_blocks", None)
    keras.saving.get_custom_objects().pop(REGISTERED, None)
    keras.saving.get_custom_objects().pop("fitnets_test_blocks>BlockNet", None)


def _student_file(path) -> str:
    import my_blocks  # noqa: PLC0415  (the fixture's module)

    inputs = keras.Input((28, 28, 1))
    h = my_blocks.Block(4, name="block1")(inputs)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    keras.Model(inputs, keras.layers.Dense(10, name="logits")(h)).save(path)
    return str(path)


def _forget_blocks():
    """As in a new process that has not imported the user's module."""
    sys.modules.pop("my_blocks", None)
    keras.saving.get_custom_objects().pop(REGISTERED)


def test_a_file_with_an_unregistered_class_names_it_and_the_flag_then_loads_once_imported(
    blocks_module, tmp_path
):
    path = _student_file(tmp_path / "student.keras")
    _forget_blocks()
    assert custom_code.unregistered_classes(path) == [(REGISTERED, "my_blocks")]
    with pytest.raises(ModelFileError) as refused:
        sources.resolve(path, (28, 28, 1), 10, role="student")
    # It was reported as a damaged file, to restore from a backup.
    assert str(refused.value) == (
        f"Cannot load the student {path!r}: it is not damaged, but it holds custom classes "
        f"not registered in this process: '{REGISTERED}' (module my_blocks). Give "
        "--custom_modules=my_blocks, the modules that register them, their folder on PYTHONPATH "
        "(from Python, import them before loading)."
    )
    custom_code.import_modules(["my_blocks"])
    assert custom_code.unregistered_classes(path) == []
    # Imported, but registering nothing under that name (the decorator dropped since).
    keras.saving.get_custom_objects().pop(REGISTERED)
    assert "The module my_blocks is imported but does not register them under these names" in \
        custom_code.advice(custom_code.unregistered_classes(path))
    importlib.reload(sys.modules["my_blocks"])  # registers it again
    student = sources.resolve(path, (28, 28, 1), 10, role="student")
    assert [layer.name for layer in student.layers][1] == "block1"


def test_a_subclassed_model_file_is_the_graph_of_its_layers(blocks_module, tmp_path):
    # It failed with an AttributeError (a subclassed model has no `inputs`) once loaded.
    import my_blocks  # noqa: PLC0415  (the fixture's module)

    net = my_blocks.BlockNet(name="block_net")
    net(np.zeros((1, 28, 28, 1), np.float32))
    net.save(tmp_path / "net.keras")
    student = sources.resolve(str(tmp_path / "net.keras"), (28, 28, 1), 10, role="student")
    assert [layer.name for layer in student.layers] == [
        "block_net_input", "net_block", "net_gap", "net_logits"]  # fmt: skip
    # A teacher file (--teacher_path) keeps its weights; it was refused as not Functional.
    teacher = builders.trained_teacher(tmp_path / "net.keras", (28, 28, 1), 10)
    assert [layer.name for layer in teacher.layers][1:] == ["net_block", "net_gap", "net_logits"]
    np.testing.assert_array_equal(teacher.layers[-1].kernel, net.logits.kernel)


def test_advice_for_classes_of_a_script_and_classes_saved_undecorated():
    said = custom_code.advice([("Custom>Gate", "__main__"), ("Gate2", "__main__")])
    assert said.startswith("it is not damaged, but it holds custom classes not registered in "
                           "this process: 'Custom>Gate' (module __main__), 'Gate2' (module "
                           "__main__). They were defined in the script that saved the file: "
                           "move them to a module of their own, registered under the same "
                           "names, and give --custom_modules=MODULE.")  # fmt: skip
    assert "keras.saving.get_custom_objects()['Gate2'] = Gate2" in said


def test_module_names_are_checked_without_importing_them(blocks_module):
    assert custom_code.problem("my_blocks") is None and "my_blocks" not in sys.modules
    assert "is not a Python module name" in custom_code.problem("my_blocks.py/x")
    assert custom_code.problem("no_such_module_here") == (
        "custom module 'no_such_module_here' cannot be found: run from the folder holding "
        "no_such_module_here.py (or its package), put that folder on PYTHONPATH, or install it"
    )
    config = ExperimentConfig(runtime=RuntimeConfig(custom_modules=("my_blocks", "1x", "nope_x")))
    with pytest.raises(ConfigError, match=r"custom module '1x' is not a Python module name.*; "
                                          r"custom module 'nope_x' cannot be found"):  # fmt: skip
        config.validate()


@pytest.mark.parametrize(
    ("source", "fix"),
    [
        ("raise RuntimeError('no GPU here')",
         "(RuntimeError: no GPU here): fix the module, then re-run."),
        ("import zz_not_installed_anywhere",
         "it imports 'zz_not_installed_anywhere', which is not installed here: install it"),
    ],
)  # fmt: skip
def test_a_module_that_fails_to_import_is_named_with_its_error(tmp_path, monkeypatch, source, fix):
    (tmp_path / "broken_blocks.py").write_text(source + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="Cannot import the module 'broken_blocks' of "
                                          "--custom_modules") as refused:  # fmt: skip
        custom_code.import_modules(["broken_blocks"])
    assert fix in str(refused.value)
    sys.modules.pop("broken_blocks", None)


def test_the_command_line_loads_a_custom_layer_file_with_custom_modules(blocks_module, tmp_path):
    path = _student_file(tmp_path / "student.keras")
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{blocks_module}",
               TF_CPP_MIN_LOG_LEVEL="2")  # fmt: skip

    def list_layers(*flags):
        return subprocess.run(
            [sys.executable, "-m", "fitnets_tf.train", f"--flagfile={SMOKE}",
             f"--student={path}", "--list_layers", *flags],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip

    listed = list_layers("--custom_modules=my_blocks")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "block1" in listed.stdout and "Block" in listed.stdout
    refused = list_layers()
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "Give --custom_modules=my_blocks" in refused.stderr


def test_a_console_script_finds_a_custom_module_in_the_current_folder(blocks_module, tmp_path):
    # `fitnets-train` (a console script) does not put the current folder on sys.path as
    # `python -m` does: `--custom_modules=my_blocks` beside my_blocks.py was "cannot be found".
    # `python -P` runs as a console script does, without it.
    path = _student_file(tmp_path / "student.keras")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    listed = subprocess.run(
        [sys.executable, "-P", "-m", "fitnets_tf.train", f"--flagfile={SMOKE}",
         f"--student={path}", "--list_layers", "--custom_modules=my_blocks"],
        cwd=blocks_module, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "block1" in listed.stdout and "Block" in listed.stdout


def test_export_imports_the_modules_its_run_recorded(blocks_module, tmp_path):
    from fitnets_tf.export import serving  # noqa: PLC0415

    run = tmp_path / "run"
    (run / "kd").mkdir(parents=True)
    (run / "flags.txt").write_text("--mode=kd\n--custom_modules=my_blocks\n")
    serving.import_run_modules(run / "kd")  # a mode's directory: its run's flags
    assert "my_blocks" in sys.modules
    (run / "flags.txt").write_text("--custom_modules=my_blocks,gone_blocks_x\n")
    with pytest.raises(ConfigError, match=r"Cannot import the module 'gone_blocks_x' of the run's "
                                          r"--custom_modules \(.*flags.txt\)"):  # fmt: skip
        serving.import_run_modules(run)
