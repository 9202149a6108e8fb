"""Putting an artifact at its final path: staged beside it, verified, then renamed into place.

A crash never leaves a half-written model at the final path, and an existing artifact is never
removed before its replacement is complete. The path is locked meanwhile
(:func:`.destination.output_lock`). What a kill (SIGKILL, an OOM kill) leaves at each point:

- before the final rename: the old artifact (if any) in place, and a hidden staging folder
  ``.NAME.partial-*`` beside it, removed by the next export to that path;
- a file (``.keras``, ``.onnx``, ``.tflite``) replaces a file in one ``os.replace``: the old
  artifact or the new one, never neither;
- a folder (SavedModel) cannot replace a non-empty folder in one rename, so the old one moves
  into the staging folder first (``previous``), then the new one in. Killed between the two,
  NAME is missing, and the old artifact is in ``.NAME.partial-*/previous``; the next export to
  that path moves it back before anything else (or move it back by hand). After both renames:
  the new artifact, and the old one in the staging folder, removed by the next export.

At every point it also leaves the lock file ``.NAME.export-lock``, unlocked (the kernel
releases a dead process's ``flock``): the next export to that path takes it and removes it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile

import keras
import tensorflow as tf

from fitnets_tf.errors import ExportConfigError, OutputExistsError
from fitnets_tf.export import labels, writers
from fitnets_tf.export.artifacts import DESCRIPTIONS, SAVED_MODEL_FILE, is_artifact
from fitnets_tf.export.destination import existing_folder, output_lock
from fitnets_tf.export.serving import run_of
from fitnets_tf.export.verify import verify
from fitnets_tf.run import io, lock, swap
from fitnets_tf.run.layout import RunLayout

STAGING_MARK = ".partial-"


def refuse_existing(output: str | pathlib.Path, overwrite: bool, format: str) -> None:
    """Raises :class:`OutputExistsError` if ``output`` holds something and may not be replaced:
    anything but an earlier ``format`` artifact, or that without ``overwrite``.

    An earlier artifact is what the format writes, told by its content
    (:func:`.artifacts.is_artifact`): a directory holding ``saved_model.pb``, a ``.keras`` zip,
    an ONNX model, a LiteRT flatbuffer. ``--overwrite`` once replaced a whole folder of other
    exports by one SavedModel, and any file named like the output: it replaces an artifact,
    never other things. An empty folder (SavedModel) or an empty file (the others) is free; a
    folder where a file goes, or a file where a folder goes, is refused even empty.
    """
    output = pathlib.Path(output)
    if not (output.exists() or output.is_symlink()):
        return
    if output.exists() and output.is_dir() != (format == "saved_model"):
        # Even empty: a folder where a file goes (or the reverse) was exchanged with the new
        # artifact and deleted, where the user most likely meant a path inside it.
        raise OutputExistsError(_not_an_artifact(output, format))
    empty = (output.is_dir() and not any(output.iterdir())) or (
        output.is_file() and output.stat().st_size == 0
    )
    if empty:
        return
    if output.exists() and not is_artifact(output, format):
        raise OutputExistsError(_not_an_artifact(output, format))
    if not overwrite:
        raise OutputExistsError(
            f"{output} already exists and is not empty; nothing was written. Choose another "
            "--output, or pass --overwrite to replace it (the old artifact is kept until the new "
            "one is complete)."
        )


def _not_an_artifact(output: pathlib.Path, format: str) -> str:
    artifact = "SavedModel" if format == "saved_model" else f"{writers.SUFFIXES[format]} file"
    if output.is_dir():
        what = "a directory" + (f" without {SAVED_MODEL_FILE}" if format == "saved_model" else "")
        return (
            f"{output} is {what}, not a {artifact}; nothing was written. --overwrite replaces "
            f"only an earlier {artifact}, never other files: choose another --output, such as a "
            f"new path inside {output}."
        )
    what = "a file" if output.is_file() else "neither a file nor a directory"
    return (
        f"{output} is {what}, not {DESCRIPTIONS[format]}; nothing was written. --overwrite "
        f"replaces only an earlier {artifact}, never other files: move {output.name} elsewhere, "
        "or choose another --output."
    )


def refuse_run_files(output: str | pathlib.Path, workdir: str | pathlib.Path | None) -> None:
    """Raises :class:`ExportConfigError` if writing ``output`` could replace what the run in
    ``workdir`` made: the run directory, a directory holding it, or one of its files (outside
    ``workdir``'s ``export/``, which is the exports' own). ``workdir`` may be a mode's directory
    in a run: the run's files are refused too. ``--overwrite`` would otherwise delete them.
    """
    if workdir is None:
        return
    # A mode's directory (RUN/kd) is exported within its run: RUN's files are the run's too.
    run = run_of(pathlib.Path(workdir)).root.resolve()
    target = pathlib.Path(output).expanduser().resolve()
    exports = RunLayout(pathlib.Path(workdir).resolve()).export
    if target == run or target in run.parents:
        what = "the run directory itself" if target == run else f"a directory holding the run {run}"
    elif target.is_relative_to(run) and not target.is_relative_to(exports) and target.exists():
        what = f"a file of the run in {run}"
    else:
        return
    raise ExportConfigError(
        f"--output={output} is {what}: an export there would replace what training wrote. "
        f"Choose a path outside the run, or leave --output out to write under {exports}."
    )


def publish(
    serving: keras.Model,
    output: pathlib.Path,
    format: str,
    overwrite: bool,
    raw: bool,
    class_names: list[str] | None = None,
) -> None:
    """Writes into a staging directory beside ``output``, verifies, then renames into place.

    The staging directory is a sibling so the final ``os.replace`` stays on one filesystem and
    is a rename, never a copy. Whatever happens, the staging directory is removed. The class
    names (checked by :func:`.labels.resolve`) are added to the staged artifact, so they reach
    the final path with it or not at all.

    Raises:
        DiskFullError: no room to write the artifact (the previous one, if any, is kept).
    """
    # The staging folder too: on a full disk, making it is the first write that finds no room.
    with no_room(output, format), staging_directory(output) as staging:
        staged = staging / "new" / output.name
        staged.parent.mkdir()
        with _quiet_tf_logger():
            writers.WRITERS[format](serving, staged)
            labels.write(staged, format, class_names)
            verify(staged, format, serving, raw, class_names, output=output)
        refuse_existing(output, overwrite, format)  # Something may have appeared meanwhile.
        move_into_place(staged, output, staging / "previous")


@contextlib.contextmanager
def staging_directory(output: pathlib.Path):
    """A new hidden directory beside ``output``, locked while in use and removed after.

    ``output`` itself is locked meanwhile (:func:`.destination.output_lock`; already held when
    the caller took it before its own work), and what killed exports to it left is cleared
    first (:func:`clear_killed`).
    """
    with output_lock(output):
        clear_killed(output)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=_staging_prefix(output), dir=output.parent))
        try:
            with lock.hold(staging, what="export staging directory"):
                yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def clear_killed(output: pathlib.Path) -> None:
    """Removes the staging directories that killed exports to ``output`` left, giving back the
    old artifact first if one was killed between moving it aside and moving the new one in.

    A process killed with SIGKILL cannot remove its own: every staging directory of ``output``
    whose lock no live process holds is removed (the kernel releases a dead writer's lock).
    One without a lock file (a writer killed before it took it, or an older version's) is left
    alone. Called with ``output``'s lock held, before ``output`` is checked: the old artifact
    given back is then refused without ``overwrite`` before any conversion.
    """
    prefix = _staging_prefix(output)
    for stale in output.parent.iterdir():
        if stale.name.startswith(prefix) and stale.is_dir() and lock.held(stale) is False:
            previous = stale / "previous"
            if previous.exists() and not (output.exists() or output.is_symlink()):
                os.replace(previous, output)  # killed between move_into_place's two renames
            shutil.rmtree(stale, ignore_errors=True)


def _staging_prefix(output: pathlib.Path) -> str:
    return f".{output.name}{STAGING_MARK}"


def no_room(output: pathlib.Path, format: str):
    """A full disk while writing ``output`` as :class:`DiskFullError`, saying what is kept."""
    kept = ", and the artifact already there is unchanged" if output.exists() else ""
    # The LiteRT converter goes through a SavedModel in the system's temporary directory.
    where = f"{existing_folder(output)}" + (
        f" and {tempfile.gettempdir()}" if format == "litert" else ""
    )
    return io.disk_full_as_user_error(
        f"Cannot write the {format} export {output}: {{reason}}. The partial files were "
        f"removed{kept}. Free space on {where} (or choose another --output), then export again."
    )


def move_into_place(staged: pathlib.Path, output: pathlib.Path, previous: pathlib.Path) -> None:
    """``staged`` renamed to ``output``; an artifact already there is only removed once the new
    one is in (it is left in the staging directory, at ``staged`` or ``previous``, and goes
    with it).

    A file replaces a file (or a link) in one ``os.replace``, a folder a folder in one exchange
    (:func:`~fitnets_tf.run.swap.exchange`): a kill leaves the old artifact or the new one.
    Where the filesystem cannot exchange, a folder takes two renames, and a kill between them
    leaves neither until the next export gives the old one back (:func:`clear_killed`).
    """
    if not (output.exists() or output.is_symlink()) or (
        staged.is_file() and (output.is_symlink() or not output.is_dir())
    ):
        os.replace(staged, output)
        return
    if swap.exchange(staged, output):
        return  # the old artifact, now at ``staged``, goes with the staging directory
    # os.replace cannot put a directory over a non-empty one, so the old artifact moves aside
    # first; it is deleted with the staging directory only once the new one is in.
    os.replace(output, previous)
    try:
        os.replace(staged, output)
    except BaseException:
        os.replace(previous, output)
        raise


@contextlib.contextmanager
def _quiet_tf_logger():
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)
