"""What every command-line program shares: how it starts and how it reports a user error."""

from __future__ import annotations

import errno
import functools
import sys

from fitnets_tf.cli import flagfiles, startup
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
    # The flag names are known now (the program's module defined them): a misspelt one in a
    # flagfile is named with its file and line, which absl's message leaves out.
    program = flag_modules[-1].replace(".cli.", ".")  # fitnets_tf.cli.train: fitnets_tf.train
    flagfiles.check(sys.argv, program, known=_defined, names=tuple(flags.FLAGS))
    try:
        app.run(main)
    except SystemExit as e:
        # absl exits with status 1 after printing --help; asking for help is not a failure.
        if e.code == 1 and any(a in _HELP for a in sys.argv[1:]):
            sys.exit(0)
        raise


def _defined(name: str) -> bool:
    """Whether absl takes ``--name`` (``--noNAME`` for a boolean flag)."""
    from absl import flags

    if name in flags.FLAGS:
        return True
    negated = name[2:] if name.startswith("no") else None
    return negated in flags.FLAGS and flags.FLAGS[negated].boolean


def _apply_verbosity() -> None:
    """Warnings only (TensorFlow's and tf2onnx's INFO lines drown a program's own), unless
    ``-v``/``--verbosity`` says otherwise: set again once absl's handler is installed, which
    its parsing of the flag precedes."""
    from absl import flags, logging

    given = flags.FLAGS["verbosity"]
    logging.set_verbosity(given.value if given.present else logging.WARNING)


def quiet_tensorflow() -> None:
    """:func:`fitnets_tf.cli.startup.quiet_tensorflow` for ``sys.argv``; it has effect only
    if TensorFlow is not imported yet (``fitnets_tf``'s ``__init__`` normally did it)."""
    startup.quiet_tensorflow(sys.argv)


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

    A usage error (a stray argument) is one line and exit status 2, not absl's whole ``--help``.
    Anything else propagates with its traceback: it is a bug to report, not bad input.
    """
    from absl import app

    def decorate(main):
        @functools.wraps(main)
        def wrapped(argv):
            _apply_verbosity()
            try:
                return main(argv)
            except app.UsageError as e:
                print(f"{program}: error: {e}. Flags are --name=value; --helpshort lists them.",
                      file=sys.stderr)  # fmt: skip
                sys.exit(flagfiles.USAGE_EXIT_STATUS)
            except Exception as e:
                message = user_message(e)
                if message is None:
                    raise
                print(f"{program}: error: {message}", file=sys.stderr)
                sys.exit(1)

        return wrapped

    return decorate
