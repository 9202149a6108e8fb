"""A run writes in a directory of its own, and never over or among its own inputs.

``--workdir=.`` in a project folder holding the user's ``student.keras`` (given as
``--student``) and ``summary.json`` was taken for a new run, whose final files then replaced
both without a word. :func:`claim` refuses, before anything is written:

* a directory that holds files or folders a run writes (:meth:`RunLayout.outputs`) and shows no
  run started in it (:func:`started_here`): the user's folder, not a run directory. A new or
  empty directory, a run to resume, and what a start refused before its first stage left
  (``flags.txt``, ``versions.json``, ``data.json``) are taken;
* in any directory, a run that would write over one of its inputs (the ``--student`` or
  teacher file, the ``--dataset`` file or folder), whatever else is there;
* a directory inside the ``--dataset`` folder (or that folder): its files would land among
  the class folders, and the next run would read the run directory as a class.
"""

from __future__ import annotations

import json
import os
import pathlib

from fitnets_tf.builders import input_paths
from fitnets_tf.errors import WorkdirError
from fitnets_tf.run.layout import RunLayout
from fitnets_tf.run.plan import plan

# The first line of the flags.txt the training CLI writes: the mark of a start it made here,
# which a user's own flagfile of that name does not carry (absl reads it as a comment).
FLAGS_HEADER = ("# The resolved flags of the fitnets_tf.train run in this directory: re-run it "
                "with --flagfile=THIS_FILE.\n")  # fmt: skip


def started_here(files: RunLayout) -> bool:
    """Whether a run was started in ``files.root``: it has a run state, or the first files a
    start writes (``versions.json`` as a run writes it, the CLI's ``flags.txt``)."""
    if files.run_state.exists() or files.run_state_previous.exists():
        return True
    try:
        versions = json.loads(files.versions.read_text())
    except (OSError, ValueError):  # UnicodeDecodeError included
        versions = None
    if isinstance(versions, dict) and {"tensorflow", "keras"} <= versions.keys():
        return True
    try:
        return files.flags.read_text().startswith(FLAGS_HEADER)
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
    found = [p for p in outputs if p.exists() or p.is_symlink()]
    if found and not started_here(files):
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in found)
        raise WorkdirError(
            f"The --workdir {str(files.root)!r} is not a run directory, and it holds files a run "
            f"writes: {names}. A new run there would replace them. Give an empty or new "
            "--workdir."
        )
    _refuse_writing_over_inputs(files, outputs, input_paths(config))


def _refuse_writing_over_inputs(files: RunLayout, outputs, inputs: dict) -> None:
    real_root = pathlib.Path(os.path.realpath(files.root))
    written = {pathlib.Path(os.path.realpath(p)): p for p in outputs}
    for flag, path in inputs.items():
        read = pathlib.Path(os.path.realpath(path))
        if read.is_dir() and (read == real_root or read in real_root.parents):
            raise WorkdirError(_inside_an_input(files.root, real_root, flag, path, read))
        hit = next((p for real, p in written.items() if read == real or real in read.parents),
                   None)  # fmt: skip
        if hit is not None:
            raise WorkdirError(
                f"{flag} names {str(path)!r}, which the run in {str(files.root)!r} would "
                f"replace with its own {hit.relative_to(files.root)}: a run never writes over "
                "its inputs. Give an empty or new --workdir, or keep the file elsewhere."
            )


def _inside_an_input(root, real_root, flag: str, path, read) -> str:
    """The refusal of a ``root`` in (or at) the input folder ``path``; ``real_root``, ``read``:
    them resolved (relative paths, symlinks), named where they differ."""
    where = "the" if read == real_root else "inside the"
    return (
        f"The --workdir {_named(root, real_root)} is {where} {flag} folder {_named(path, read)}: "
        "the run's files and folders would land among its class folders, and a later run on it "
        "would read them as a class. Put the run directory outside the image folder, e.g. "
        f"--workdir={read.parent / 'runs' / real_root.name}."
    )


def _named(given, real: pathlib.Path) -> str:
    return repr(str(given)) + ("" if pathlib.Path(given) == real else f" ({real})")
