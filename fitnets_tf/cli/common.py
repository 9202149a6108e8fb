"""What every command-line program shares: how it starts and how it reports a user error."""

from __future__ import annotations

import errno
import functools
import os
import sys

from fitnets_tf.errors import UserError

# An OSError with one of these is the machine's state, not a bug: the message says what to free.
_USER_OS_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                   errno.EACCES: "permission denied", errno.EROFS: "the filesystem is read-only"}  # fmt: skip


def quiet_tensorflow() -> None:
    """TensorFlow's C++ INFO lines drown the epoch lines; set before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def user_message(error: BaseException) -> str | None:
    """The one paragraph a CLI prints for ``error``, or None when it is a bug (a traceback)."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, OSError) and error.errno in _USER_OS_ERRORS:
        where = f" ({error.filename})" if error.filename else ""
        return f"Cannot write{where}: {_USER_OS_ERRORS[error.errno]}. Free space or fix the path, then re-run."
    return None


def reports_user_errors(program: str):
    """Decorates an absl ``main``: a user error is one paragraph on stderr and exit status 1.

    Anything else propagates with its traceback: it is a bug to report, not bad input.
    """

    def decorate(main):
        @functools.wraps(main)
        def wrapped(argv):
            try:
                return main(argv)
            except Exception as e:
                message = user_message(e)
                if message is None:
                    raise
                print(f"{program}: error: {message}", file=sys.stderr)
                sys.exit(1)

        return wrapped

    return decorate
