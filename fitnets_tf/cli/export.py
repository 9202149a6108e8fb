"""Exports a finished run's student: ``python -m fitnets_tf.export --workdir=RUN --format=F``.

Prints each artifact's path and size, then (``--latency``) the CPU latency of the student and,
if the run has one, the teacher. See :mod:`fitnets_tf.export` for the formats and the serving
convention. The run directory is locked meanwhile: a run still training there refuses it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import sys

from absl import app, flags

from fitnets_tf import export
from fitnets_tf.cli import common
from fitnets_tf.errors import ConfigError
from fitnets_tf.export import accuracy, labels, quantize
from fitnets_tf.export.destination import output_lock, refuse_unwritable
from fitnets_tf.export.publish import clear_killed, refuse_run_files

common.quiet_tensorflow()

flags.DEFINE_string("workdir", None, "Run directory holding student.keras.", required=True)
flags.DEFINE_enum(
    "format", "saved_model", (*export.FORMATS, "all"), "Export format; 'all' writes each."
)
flags.DEFINE_string("output", None, "Output path; defaults to WORKDIR/export/student.<ext>. "
                    "With --format=all, the directory each format is written to.")  # fmt: skip
flags.DEFINE_bool("include_preprocessing", False, "Bake WORKDIR/preprocessor.keras into the graph: "
                  "the model then takes raw pixels in [0, 255].")  # fmt: skip
flags.DEFINE_bool(
    "overwrite", False, "Replace an earlier artifact of the format at --output (only once the "
    "new one is complete); never a directory of other files."
)
flags.DEFINE_enum(
    "quantize", None, tuple(quantize.QUANTIZATIONS), "Write a quantized model: 'dynamic' = "
    "LiteRT, int8 weights, float activations; 'int8' = int8 weights and activations, calibrated "
    "on the run's training images (" + ", ".join(
        f"{q}: --format={'/'.join(f)}" for q, f in quantize.QUANTIZATIONS.items()
    ) + "). Only the kinds that kept the default experiment's student within 0.5 points of its "
    "float32 test accuracy are offered (the figures: README, section 'Export and serving')."
)
flags.DEFINE_integer(
    "accuracy_images", accuracy.DEFAULT_IMAGES, "After a --quantize export, the test images "
    "(the first of the run's test split) on which the quantized model's accuracy and the float32 "
    "student's are measured, printed and kept in <artifact>.accuracy.json; 0 = not measured.",
    lower_bound=0,
)
flags.DEFINE_list(
    "class_names", [labels.AUTO], "The class of each output index, in label order, written into "
    "the SavedModel, ONNX and LiteRT artifacts (a .keras file has no place for them): 'auto' = "
    "the run's summary.json class_names (none if it has none), 'none' = none, or NAME,NAME,... "
    "one per class."
)  # fmt: skip
flags.DEFINE_bool(
    "latency", True, "Also time the student, and the teacher if there is one, on this CPU."
)
flags.DEFINE_string("teacher", None, "Teacher .keras for the latency table; defaults to the "
                    "run's (WORKDIR/teacher/teacher.keras, or the one its flags.txt "
                    "loaded).")  # fmt: skip
flags.DEFINE_integer("latency_repeats", 15, "Timed calls per batch size.", lower_bound=1)
flags.DEFINE_integer("threads", None, "TensorFlow intra-op threads for the timing (default: all "
                     "cores).", lower_bound=1)  # fmt: skip
FLAGS = flags.FLAGS


def _set_threads(threads: int) -> None:
    from fitnets_tf.latency import set_threads

    try:
        set_threads(threads)  # before the export runs TensorFlow and fixes its pool
    except RuntimeError as e:  # TensorFlow already started: the user's flag, not a bug
        raise ConfigError(str(e)) from e


@contextlib.contextmanager
def _locked(workdir: pathlib.Path):
    """Holds the run directory's lock, unless the directory is read-only.

    Nothing can train in a read-only run directory either, and refusing it would stop an
    export of a shared, read-only run to an ``--output`` elsewhere.
    """
    from fitnets_tf.run import lock

    if not os.access(workdir, os.W_OK):
        yield
        return
    with lock.hold(workdir):
        yield


def _latency_rows(models: dict, repeats: int) -> list[tuple]:
    from fitnets_tf.export.serving import as_served
    from fitnets_tf.latency import measure_latency

    rows = []
    for name, model in models.items():
        timings = measure_latency(as_served(model), batch_sizes=(1, 128), repeats=repeats)
        for batch, r in timings.items():
            rows.append((name, batch, f"{r['ms_per_image']:.4g}", f"{r['images_per_second']:.0f}"))
    return rows


def _class_names():
    """``--class_names`` as :func:`fitnets_tf.export.export_student` takes it."""
    if FLAGS.class_names == ["none"]:
        return None
    return labels.AUTO if FLAGS.class_names == [labels.AUTO] else FLAGS.class_names


def _export_quantized(workdir: pathlib.Path) -> pathlib.Path:
    student, preprocessor = export.load_run(workdir)
    if FLAGS.include_preprocessing and preprocessor is None:  # the library's own message
        export.serving.resolve_preprocessor("auto", None, workdir)
    baked = preprocessor if FLAGS.include_preprocessing else None
    serving = export.build_serving_model(student, baked)
    # Names refused before the calibration images are read and anything is written.
    names = labels.resolve(_class_names(), workdir, serving.outputs[0].shape[-1], (FLAGS.format,))
    default = export.default_output(workdir, FLAGS.format, FLAGS.include_preprocessing)
    output = pathlib.Path(FLAGS.output).expanduser() if FLAGS.output else default.with_name(
        f"{default.stem}_{FLAGS.quantize}{default.suffix}"
    )
    refuse_run_files(output, workdir)
    # Before the calibration images are read.
    export.refuse_existing(output, FLAGS.overwrite, FLAGS.format)
    refuse_unwritable(output)
    with output_lock(output):  # a second export to it is refused before the calibration
        clear_killed(output)  # a killed export's old artifact back, to be checked below
        export.refuse_existing(output, FLAGS.overwrite, FLAGS.format)  # the last holder's
        calibration = None
        if FLAGS.quantize == "int8":
            source = quantize.calibration_source(workdir)
            calibration = quantize.calibration_images(source, preprocessor)
        return quantize.export_quantized(serving, output, FLAGS.quantize, FLAGS.format,
                                         calibration=calibration, overwrite=FLAGS.overwrite,
                                         raw=FLAGS.include_preprocessing,
                                         class_names=names)  # fmt: skip


def _exit_on_sigterm() -> None:
    """SIGTERM (``kill``, a job's time limit) as an exit that unwinds: Python's default ends
    the process at once, skipping the ``finally`` that removes an export's staging directory.
    """
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


@common.reports_user_errors("fitnets_tf.export")
def main(argv: list[str]) -> None:
    """Exports a finished run's student and prints sizes (and latencies)."""
    _exit_on_sigterm()
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.threads:
        _set_threads(FLAGS.threads)
    from fitnets_tf.latency import artifact_size, format_size
    from fitnets_tf.reporting.tables import format_table

    workdir = pathlib.Path(FLAGS.workdir).expanduser()  # as training's (a quoted ~ too)
    if FLAGS.quantize:  # before anything is loaded
        quantize.check(FLAGS.quantize, FLAGS.format, raw=FLAGS.include_preprocessing)
        if FLAGS.quantize == "int8" and workdir.is_dir():
            quantize.calibration_source(workdir)
    if not workdir.is_dir():  # the library's message; the lock would create the directory
        export.load_run(workdir)
    for path in export.serving.unverified(workdir):
        print(f"note: {path} has no sha256 beside it (a run from before fitnets_tf wrote "
              "them): it is loaded without an integrity check.")  # fmt: skip
    # The run's lock, also for a mode's directory (RUN/kd): training in RUN excludes it.
    with _locked(export.serving.run_of(workdir).root):
        written = _export_quantized(workdir) if FLAGS.quantize else export.export_student(
            workdir,
            FLAGS.output,
            FLAGS.format,
            include_preprocessing=FLAGS.include_preprocessing,
            overwrite=FLAGS.overwrite,
            class_names=_class_names(),
        )
        kept = None
        if FLAGS.quantize:  # the artifact is in place and verified: measuring cannot lose it
            kept = accuracy.keep_accuracy(workdir, written, FLAGS.format, FLAGS.quantize,
                                          raw=FLAGS.include_preprocessing,
                                          images=FLAGS.accuracy_images)  # fmt: skip
        if not isinstance(written, dict):
            written = {FLAGS.format: written}
        rows = [(fmt, str(path), format_size(artifact_size(path))) for fmt, path in written.items()]
        latency = []
        if FLAGS.latency:
            timed = export.serving.timed_models(workdir, FLAGS.teacher)
            latency = _latency_rows(timed, FLAGS.latency_repeats)
    print(format_table(("format", "path", "size"), rows, align="<<<"))
    if kept:
        print(kept)
    if latency:
        print()
        print("CPU latency (Keras, tf.function, median):")
        print(format_table(("model", "batch", "ms/image", "images/s"), latency))


def entry_point():
    """``python -m fitnets_tf.export`` and the ``fitnets-export`` console script."""
    common.run(main, ("fitnets_tf.cli.export",))
