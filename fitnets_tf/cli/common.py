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


_HELP = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def run(main, flag_modules: tuple[str, ...]) -> None:
    """``absl.app.run(main)``, with the flags of ``flag_modules`` listed by ``--help``.

    absl's ``--help`` lists the flags of the main module only; ours are defined in library
    CLI modules, so they are made key flags of whatever script runs (``python -m``, a console
    script).
    """
    from absl import app, flags

    for module in flag_modules:
        for flag in flags.FLAGS.get_flags_for_module(module):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    try:
        app.run(main)
    except SystemExit as e:
        # absl exits with status 1 after printing --help; asking for help is not a failure.
        if e.code == 1 and any(a in _HELP for a in sys.argv[1:]):
            sys.exit(0)
        raise


def quiet_tensorflow() -> None:
    """TensorFlow's C++ INFO lines drown the epoch lines; set before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def user_message(error: BaseException) -> str | None:
    """The one paragraph a CLI prints for ``error``, or None when it is a bug (a traceback)."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, OSError) and error.errno in _USER_OS_ERRORS:
        where = f" ({error.filename})" if error.filename else ""
        fix = ("Free space there" if error.errno in (errno.ENOSPC, errno.EDQUOT)
               else "Fix its permissions or choose another path")  # fmt: skip
        return f"Cannot write{where}: {_USER_OS_ERRORS[error.errno]}. {fix}, then re-run."
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
