"""The tutorial notebooks: committed without outputs, and running top to bottom in smoke mode.

Each notebook runs in a fresh Jupyter kernel of this interpreter (the venv's), with
``FITNETS_SMOKE=1`` (it then shrinks data and epochs to a run of a minute or two) and a
temporary working directory, so its exports and files stay out of the repository.
"""

import importlib.util
import os
import pathlib
import re
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = ("01_quickstart.ipynb", "02_custom_models.ipynb", "03_tuning.ipynb", "04_own_model.ipynb")
# Smoke runs take one to two minutes here; far past that, smoke mode is probably not applied.
SMOKE_SECONDS = 360


def _generator():
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", NOTEBOOK_DIR / "build_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code(nb) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    with_outputs = [
        i for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]  # fmt: skip
    assert not with_outputs, (
        f"{name}: cells {with_outputs} hold outputs. Notebooks are committed stripped: run "
        "`python notebooks/build_notebooks.py`."
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_matches_its_generator(name):
    text = _generator().render(name)
    assert (NOTEBOOK_DIR / name).read_text() == text, (
        f"{name} differs from notebooks/build_notebooks.py, where its cells are written: "
        "edit the cells there and run `python notebooks/build_notebooks.py`."
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_uses_the_library_and_reads_smoke_mode(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    code = _code(nb)
    assert "FITNETS_SMOKE" in code[0], f"{name}: the first code cell must read FITNETS_SMOKE"
    assert "%matplotlib inline" in code[0]
    source = "\n".join(code)
    assert "fitnets_tf" in source
    # Losses, layers and trainers come from fitnets_tf: the only class a notebook may declare
    # is a user's own subclassed model (the student that KD takes as it is).
    classes = re.findall(r"^\s*class\s+\w+\((.*)\):", source, re.M)
    assert len(classes) == len(re.findall(r"^\s*class\s", source, re.M)), f"{name}: a class"
    assert all(base == "keras.Model" for base in classes), f"{name} defines a class: {classes}"


def test_own_model_runs_what_its_command_line_says():
    # Section 7 said "this cell runs what the command line below would run", but built its
    # config from ExperimentConfig() (the paper's recipe) while a command line without a
    # flagfile starts from the default experiment's: 20 options differed.
    from absl import flags

    from fitnets_tf.cli import flags as flag_lib
    from fitnets_tf.cli import train  # noqa: F401  (defines the flags)

    nb = nbformat.read(NOTEBOOK_DIR / "04_own_model.ipynb", as_version=4)
    (markdown,) = [c.source for c in nb.cells if "```bash" in c.source]
    command = re.search(r"```bash\n(.*?)```", markdown, re.S).group(1).replace("\\\n", " ")
    argv = ["train", *command.split()[3:]]
    (cell,) = [c for c in _code(nb) if "experiment.run(" in c]
    full_run = {"WORK": "runs/04_own_model", "HINTS_EPOCHS": 3, "KD_EPOCHS": 8}
    exec(cell.split("summary = experiment.run")[0], full_run)
    try:
        flags.FLAGS(argv)
        assert full_run["config"] == flag_lib.config_from_command_line(argv)
    finally:
        flags.FLAGS.unparse_flags()


def test_readme_links_every_notebook():
    readme = (ROOT / "README.md").read_text()
    for name in NOTEBOOKS:
        assert f"notebooks/{name}" in readme, f"README.md does not link notebooks/{name}"


# The default suite runs the quick start notebook; the custom-architecture, tuning and own-model
# notebooks (their library paths tested on their own in test_models, test_tuner and
# test_distiller_own_models; the own-model one's command by test_own_model_runs_what_its_
# command_line_says) run with the slow checks, to keep the default suite near 15 minutes.
_SLOW_NOTEBOOKS = ("02_custom_models.ipynb", "03_tuning.ipynb", "04_own_model.ipynb")


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_NOTEBOOKS else n for n in NOTEBOOKS],
)
def test_runs_in_smoke_mode(name, tmp_path):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    # Which Python the kernel runs: it must be this one, with fitnets_tf's dependencies.
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('kernel prefix:', sys.prefix)"))
    env = dict(
        os.environ,
        FITNETS_SMOKE="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    start = time.perf_counter()
    client.execute(env=env)  # raises CellExecutionError, with the cell and traceback, on failure
    seconds = time.perf_counter() - start
    print(f"{name}: {seconds:.0f} s in smoke mode")

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    kernel_prefix = re.findall(r"^kernel prefix: (.*)$", text, re.M)
    assert kernel_prefix == [sys.prefix], (
        f"The notebook ran in {kernel_prefix}, not in this interpreter's environment "
        f"({sys.prefix}): a 'python3' kernelspec elsewhere shadows the one of ipykernel."
    )
    assert "smoke run" in text
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert images, f"{name}: no plot was rendered inline"
    assert seconds < SMOKE_SECONDS, f"{name} took {seconds:.0f} s in smoke mode"
