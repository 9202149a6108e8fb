"""The errors fitnets_tf raises on purpose, in one small hierarchy.

``FitNetsError`` is the base. ``UserError`` and its subclasses are problems the user fixes
(a flag, a file, a directory, a dataset): the CLIs print them as one paragraph and exit with
status 1. Anything else that escapes a CLI is a bug and keeps its traceback.

Each user error also derives from the built-in exception a Python caller would expect
(``ValueError`` for a bad argument, ``FileNotFoundError`` for a missing file...), so code
written against those keeps working.
"""

from __future__ import annotations


class FitNetsError(Exception):
    """Base of every error fitnets_tf raises on purpose."""


class UserError(FitNetsError):
    """Something the user can fix; the message says what and how."""


class ConfigError(UserError, ValueError):
    """The experiment's configuration is invalid (flags, config fields, layer names)."""


class HintShapeError(ConfigError):
    """The guided layer cannot be regressed onto the hint layer."""


class DataError(UserError, ValueError):
    """The data cannot be used as given."""


class DatasetNotFoundError(DataError):
    """A dataset is neither prepared nor available offline; the message says where we looked."""


class WorkdirError(UserError, ValueError):
    """A run directory cannot be used (not writable, or holding another run)."""


class ConfigMismatchError(WorkdirError):
    """The run directory holds a run of a different configuration."""


class DiskFullError(UserError, OSError):
    """A write failed for lack of space (or quota, or a file-size limit); what was there before
    is intact."""


class ModelFileError(UserError, ValueError):
    """A ``.keras`` file is missing or cannot be loaded safely."""


class TeacherLoadError(ModelFileError):
    """A trained teacher could not be loaded."""


class NonFiniteLossError(UserError, RuntimeError):
    """A loss term became NaN or infinite (the fix is a smaller learning rate or clean data)."""


class SearchError(UserError, ValueError):
    """A hyperparameter search cannot run as asked."""


class ExportError(UserError):
    """Base of the errors an export reports to its user."""


class MissingStudentError(ExportError, FileNotFoundError):
    """The run directory, or the trained student in it, does not exist."""


class OutputExistsError(ExportError, FileExistsError):
    """The output path holds something that may not be replaced: an earlier artifact of the
    format without ``overwrite``, or (even with it) anything else that is not empty."""


class OutputBusyError(ExportError):
    """Another process is exporting to the same output path."""


class OutputNotWritableError(ExportError, PermissionError):
    """The output's directory cannot be written: permissions, a read-only filesystem, or a
    file where a directory would be."""


class ExportConfigError(ExportError, ValueError):
    """The arguments cannot describe an export (format, suffix, student, preprocessing)."""


class RuntimeUnavailableError(ExportError, ImportError):
    """A package needed to write this format is not installed."""


class ExportVerificationError(ExportError, RuntimeError):
    """The written artifact did not reload, or its outputs differ from the in-memory model."""
