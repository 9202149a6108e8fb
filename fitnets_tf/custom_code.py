"""The user's Python modules that define the custom layers and models of their ``.keras`` files.

A ``.keras`` file names each class it holds by its registered name (``"mine>Block"``, from
``@keras.saving.register_keras_serializable(package="mine")``) and the module that defined it,
and Keras imports no module of a user's to find one: the class must be registered in the
process before the file is loaded. ``--custom_modules`` lists those modules;
:func:`import_modules` imports them (every fitnets_tf program does, before it loads a model),
and :func:`unregistered_classes` names what a file needs that is not registered, for the
message of a load that failed (:func:`fitnets_tf.run.io.load_model`).

Loading stays in Keras' safe mode: a registered class is code the user installed, not code
carried by the file.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import keyword
import os
import sys
import zipfile


def problem(name: str) -> str | None:
    """What is wrong with one ``--custom_modules`` entry (cheap: nothing is imported), or None."""
    parts = name.split(".")
    if not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        return (f"custom module {name!r} is not a Python module name (a dotted name such as "
                "my_layers or my_package.layers, without '.py')")  # fmt: skip
    found = _findable(parts[0])
    return None if found else f"custom module {name!r} cannot be found: {_not_found_fix(parts[0])}"


def _findable(top: str) -> bool:
    """Whether the top-level module ``top`` can be imported, looked for in the current folder
    too (added to ``sys.path``, last, where it holds the module): ``python -m`` puts the
    current folder first on ``sys.path``, but the console scripts (``fitnets-train``) do
    not, and a module beside the command was "cannot be found" there only."""
    try:
        if importlib.util.find_spec(top) is not None:
            return True
        here = os.getcwd()
        if here in sys.path or importlib.machinery.PathFinder.find_spec(top, [here]) is None:
            return False
        sys.path.append(here)
        return True
    except (ImportError, ValueError):
        return False


def _not_found_fix(top: str) -> str:
    return (f"run from the folder holding {top}.py (or its package), put that folder on "
            "PYTHONPATH, or install it")


def import_modules(names, given_by: str = "--custom_modules") -> None:
    """Imports each module of ``names`` (their ``@register_keras_serializable`` classes then
    load from ``.keras`` files); ``given_by`` says where the names come from, for messages.

    Raises:
        ConfigError: a module cannot be found, or raised while it was imported; the message
            names it and the error.
    """
    from fitnets_tf.errors import ConfigError  # noqa: PLC0415  (keeps this module light)

    for name in names:
        try:
            _findable(name.split(".")[0])  # the current folder too
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  (a user's module may raise anything)
            fix = _import_fix(name, e)
            raise ConfigError(f"Cannot import the module {name!r} of {given_by} "
                              f"({type(e).__name__}: {e}): {fix}.") from e  # fmt: skip


def _import_fix(name: str, error: Exception) -> str:
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return "fix the module, then re-run"
    if name == error.name or name.startswith(error.name + "."):
        return _not_found_fix(error.name)
    return f"it imports {error.name!r}, which is not installed here: install it, then re-run"


def unregistered_classes(path) -> list[tuple[str, str]]:
    """``[(registered name, module), ...]`` of the classes the ``.keras`` file ``path`` holds
    that neither Keras nor this process's registrations provide, in file order (empty: none,
    or the file's configuration cannot be read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return []
    found = {}
    for entry in _class_entries(config):
        if entry["class_name"].startswith("__"):
            continue  # Keras' own markers: '__keras_tensor__', '__tuple__', '__numpy__'...
        registered = entry.get("registered_name") or entry["class_name"]
        module = entry.get("module") or ""
        if not _provided(module, registered) and registered not in found:
            found[registered] = module
    return list(found.items())


def _class_entries(node):
    """Every serialized object of a Keras configuration (dicts with a ``class_name``)."""
    if isinstance(node, dict):
        if isinstance(node.get("class_name"), str):
            yield node
        for value in node.values():
            yield from _class_entries(value)
    elif isinstance(node, list):
        for value in node:
            yield from _class_entries(value)


def _provided(module: str, registered: str) -> bool:
    import keras  # noqa: PLC0415

    if module.split(".")[0] == "keras":
        return True  # Keras' own classes
    return keras.saving.get_registered_object(registered) is not None


def advice(unregistered: list[tuple[str, str]]) -> str:
    """The sentences of a failed load's message for ``unregistered`` (see above)."""
    classes = ", ".join(f"{name!r} (module {module})" if module else repr(name)
                        for name, module in unregistered)  # fmt: skip
    imported = sorted({m for _, m in unregistered if m in sys.modules and m != "__main__"})
    if imported:  # given, yet its classes are not registered: the decorator is missing
        return (f"it is not damaged, but it holds custom classes not registered in this process: "
                f"{classes}. The module {', '.join(imported)} is imported but does not register "
                "them under these names: decorate each class with "
                "@keras.saving.register_keras_serializable(package=...) as it was when the file "
                "was saved.")  # fmt: skip
    modules = ",".join(dict.fromkeys(m for _, m in unregistered if m not in ("", "__main__")))
    found = (f"Give --custom_modules={modules}, the modules that register them, their folder on "
             "PYTHONPATH (from Python, import them before loading)" if modules else
             # Keras finds a class by its registered name, not by the module that saved it.
             "They were defined in the script that saved the file: move them to a module of "
             "their own, registered under the same names, and give "
             "--custom_modules=MODULE")  # fmt: skip
    bare = [name for name, _ in unregistered if ">" not in name]
    if bare:  # saved without @register_keras_serializable: registered by its bare name
        found += (f". A class saved undecorated ({', '.join(map(repr, bare))}) is found by its "
                  "bare name: that module adds it with keras.saving.get_custom_objects()"
                  f"[{bare[0]!r}] = {bare[0]}")  # fmt: skip
    return (f"it is not damaged, but it holds custom classes not registered in this process: "
            f"{classes}. {found}.")  # fmt: skip
