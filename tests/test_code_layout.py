"""The package's shape: small modules and functions, no reaching into another module's privates.

These are the limits the architecture issue set (a module past ~400 lines or a function past
~60 is asking to be split by concept), checked by reading the source, not by running it.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "fitnets_tf"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines"


def _long_functions(tree: ast.AST) -> list[str]:
    long = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # The body, without the docstring: what a reader has to hold in mind.
            body = node.body[1:] if ast.get_docstring(node) else node.body
            if body:
                size = body[-1].end_lineno - body[0].lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{node.name} ({size} lines)")
    return long


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_are_small(path):
    assert _long_functions(ast.parse(path.read_text())) == []


def _private_reaches(path: pathlib.Path) -> list[str]:
    """``from fitnets_tf.x import _y`` or ``module._y`` on an imported fitnets_tf module."""
    tree = ast.parse(path.read_text())
    here = _module_name(path)
    found, modules = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fitnets_tf"):
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if alias.name.startswith("_") and node.module != here:
                    found.append(target)
                modules[alias.asname or alias.name] = target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fitnets_tf"):
                    modules[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            found.append(f"{modules[node.value.id]}.{node.attr}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_names_of_other_modules(path):
    assert _private_reaches(path) == []


def test_import_leaves_matplotlib_backend_alone():
    """Importing the library must not switch a notebook's plotting backend."""
    import subprocess
    import sys

    code = (
        "import matplotlib, sys, tempfile; before = matplotlib.get_backend(); "
        "import fitnets_tf, fitnets_tf.export, fitnets_tf.experiment, fitnets_tf.search; "
        "from fitnets_tf.reporting import plots; "
        # Drawing a run's plots does not touch pyplot's figures or the backend either.
        "plots.plot_comparison([{'name': 'teacher', 'test_accuracy': 0.9, 'params': 10}], "
        "tempfile.mktemp(suffix='.png')); "
        "import matplotlib.pyplot as plt; "
        "sys.exit(0 if matplotlib.get_backend() == before and not plt.get_fignums() else 1)"
    )
    env = {"MPLBACKEND": "svg", "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0
