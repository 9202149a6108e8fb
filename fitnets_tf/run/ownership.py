"""A run, or a search, writes in a directory of its own, and never over or among its inputs.

``--workdir=.`` in a project folder holding the user's ``student.keras`` (given as
``--student``) and ``summary.json`` was taken for a new run, whose final files then replaced
both without a word. :func:`claim` (a training run) and :func:`claim_search` (a search of
``fitnets_tf.tune``) refuse, before anything is written, the directory itself included:

* a directory that holds files or folders the program writes (:meth:`RunLayout.outputs`,
  :meth:`SearchLayout.outputs`) and shows no run (:func:`started_here`) or search
  (:func:`search_started_here`) started in it: the user's folder, not a run directory. A new or
  empty directory, one to resume, and what a start refused early left are taken;
* in any directory, writing over one of the inputs (the ``--student`` or teacher file, the
  ``--dataset`` file or folder), whatever else is there;
* a directory inside the ``--dataset`` folder (or that folder): its files would land among
  the class folders, and the next run would read the run directory as a class.
"""

from __future__ import annotations

import json
import os
import pathlib

from fitnets_tf.builders import input_paths
from fitnets_tf.errors import WorkdirError
from fitnets_tf.run.layout import RunLayout, SearchLayout
from fitnets_tf.run.plan import plan

# The first line of the flags.txt the training CLI writes: the mark of a start it made here,
# which a user's own flagfile of that name does not carry (absl reads it as a comment).
FLAGS_HEADER = ("# The resolved flags of the fitnets_tf.train run in this directory: re-run it "
                "with --flagfile=THIS_FILE.\n")  # fmt: skip
# The same mark for the flags.txt of the tuner's CLI. Searches of earlier versions wrote none:
# their search.json, stage1.json or stage 1's run mark them (search_started_here).
SEARCH_FLAGS_HEADER = ("# The resolved flags of the fitnets_tf.tune search in this directory: "
                       "resume it with --flagfile=THIS_FILE.\n")  # fmt: skip


def started_here(files: RunLayout) -> bool:
    """Whether a run was started in ``files.root``: it has a run state, or the first files a
    start writes (``versions.json`` as a run writes it, the CLI's ``flags.txt``)."""
    if files.run_state.exists() or files.run_state_previous.exists():
        return True
    versions = _json_object(files.versions)
    return {"tensorflow", "keras"} <= versions.keys() or _starts_with(files.flags, FLAGS_HEADER)


def search_started_here(files: SearchLayout) -> bool:
    """Whether a search was started in ``files.root``, by this version or an earlier one: the
    tuner CLI's ``flags.txt``, its stage 1 started (a run in ``stage1/``) or done
    (``stage1.json``), or its description recorded (``search.json``), each as the search
    writes it."""
    return (
        _starts_with(files.flags, SEARCH_FLAGS_HEADER)
        or started_here(files.stage1)
        or "teacher_path" in _json_object(files.stage1_done)
        or {"space", "oracle"} <= _json_object(files.search).keys()
    )


def _json_object(path: pathlib.Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):  # UnicodeDecodeError included
        return {}
    return value if isinstance(value, dict) else {}


def _starts_with(path: pathlib.Path, header: str) -> bool:
    try:
        return path.read_text().startswith(header)
    except (OSError, ValueError):
        return False


def claim(workdir: str | os.PathLike, config, *, flags: bool = False) -> None:
    """Refuses to run ``config`` (an :class:`~fitnets_tf.config.ExperimentConfig`) in
    ``workdir`` where it would replace files that are not its own or write among its inputs;
    ``flags``: the caller writes ``flags.txt`` (the CLI). Reads only, and ``workdir`` need not
    exist: call it before the directory is made.

    Raises:
        WorkdirError: naming the files found and what to do.
    """
    files = RunLayout(workdir)
    stages = plan(config)
    outputs = files.outputs(stages.mode_stages, teacher=stages.train_teacher, flags=flags)
    _refuse_others_files(files.root, outputs, started_here(files), "run")
    _refuse_writing_over_or_among_inputs(files.root, outputs, input_paths(config), "run")


def claim_search(workdir: str | os.PathLike, config, *, flags: bool = False) -> None:
    """:func:`claim` for a search of ``config`` in ``workdir`` (``python -m fitnets_tf.tune``
    or :func:`fitnets_tf.search.tune`), with the search's own files and mark.

    Raises:
        WorkdirError: naming the files found and what to do.
    """
    files = SearchLayout(workdir)
    outputs = files.outputs(flags=flags)
    _refuse_others_files(files.root, outputs, search_started_here(files), "search")
    _refuse_writing_over_or_among_inputs(files.root, outputs, input_paths(config), "search")


def _refuse_others_files(root: pathlib.Path, outputs, started: bool, kind: str) -> None:
    found = [p for p in outputs if p.exists() or p.is_symlink()]
    if found and not started:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in found)
        raise WorkdirError(
            f"The --workdir {str(root)!r} is not a {kind} directory, and it holds files a "
            f"{kind} writes: {names}. A new {kind} there would replace them. Give an empty or "
            "new --workdir."
        )


def _refuse_writing_over_or_among_inputs(
    root: pathlib.Path, outputs, inputs: dict, kind: str
) -> None:
    """Refuses ``root`` in (or at) an input folder, and an output that would replace an input
    (or a folder holding one); paths compared resolved."""
    real_root = pathlib.Path(os.path.realpath(root))
    written = {pathlib.Path(os.path.realpath(p)): p for p in outputs}
    for flag, path in inputs.items():
        read = pathlib.Path(os.path.realpath(path))
        if read.is_dir() and (read == real_root or read in real_root.parents):
            raise WorkdirError(_inside_an_input(root, real_root, flag, path, read, kind))
        hit = next((p for real, p in written.items() if read == real or real in read.parents),
                   None)  # fmt: skip
        if hit is not None:
            raise WorkdirError(
                f"{flag} names {str(path)!r}, which the {kind} in {str(root)!r} would "
                f"replace with its own {hit.relative_to(root)}: a {kind} never writes over "
                "its inputs. Give an empty or new --workdir, or keep the file elsewhere."
            )


def _inside_an_input(root, real_root, flag: str, path, read, kind: str) -> str:
    """The refusal of a ``root`` in (or at) the input folder ``path``; ``real_root``, ``read``:
    them resolved (relative paths, symlinks), named where they differ."""
    where = "the" if read == real_root else "inside the"
    return (
        f"The --workdir {_named(root, real_root)} is {where} {flag} folder {_named(path, read)}: "
        f"the {kind}'s files and folders would land among its class folders, and a later run "
        f"on it would read them as a class. Put the {kind} directory outside the image folder, "
        f"e.g. --workdir={read.parent / 'runs' / real_root.name}."
    )


def _named(given, real: pathlib.Path) -> str:
    return repr(str(given)) + ("" if pathlib.Path(given) == real else f" ({real})")
