"""The lines of a command line's flagfiles, checked before absl reads them.

absl takes each flagfile line as one argument: a line without dashes (``mode=fitnet``)
becomes a positional argument, which the programs refuse by printing their whole ``--help``,
and ``--mode fitnet`` becomes a flag named "mode fitnet". Neither message names the file or
the line. Standard library only: a program checks its flagfiles before TensorFlow loads.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Iterator
from typing import NamedTuple

# A usage error, as argparse and getopt-style programs exit; absl's own flag errors exit 1.
USAGE_EXIT_STATUS = 2
_DIRECTIVES = ("--flagfile", "-flagfile")


class Line(NamedTuple):
    path: str
    number: int
    text: str


def flagfile_paths(argv: list[str]) -> list[str]:
    """The flagfiles ``argv[1:]`` names, in absl's forms (``--flagfile=F``, ``-flagfile F``)."""
    paths, args = [], iter(argv[1:])
    for arg in args:
        if arg == "--":  # the flags end here
            break
        if arg in _DIRECTIVES:
            paths.append(next(args, ""))
        elif arg.startswith(tuple(d + "=" for d in _DIRECTIVES)):
            paths.append(arg.split("=", 1)[1])
    return [os.path.expanduser(p) for p in paths if p]


def flag_lines(path: str, _open: tuple[str, ...] = ()) -> Iterator[Line]:
    """The lines of ``path`` that absl passes on as arguments, nested flagfiles followed.

    A file named on the command line that cannot be read yields nothing: absl's own message
    says so. A nested one yields the line that names it, for :func:`unreadable` to explain.
    """
    if path in _open:  # a circular include: absl warns and skips it
        return
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return
    for number, line in enumerate(text.splitlines(), 1):
        # absl's rules: comments start in the first column; other lines are stripped.
        if not line.strip() or line.startswith(("#", "//")):
            continue
        if line.startswith(tuple(d + "=" for d in _DIRECTIVES)):
            nested = os.path.expanduser(line.split("=", 1)[1].strip())
            if os.path.isfile(nested) and os.access(nested, os.R_OK):
                yield from flag_lines(nested, (*_open, path))
            else:
                yield Line(path, number, line.strip())
            continue
        yield Line(path, number, line.strip())


def problem(text: str, known: Callable[[str], bool] | None = None,
            names: tuple[str, ...] = ()) -> str | None:  # fmt: skip
    """What is wrong with the flagfile line ``text`` and how to write it, or None.

    ``known`` says whether a flag name exists (``noNAME`` included); ``names`` are the
    defined flags, offered when a name is misspelled.
    """
    text = text.strip()
    if text.startswith(("#", "//")):
        return "a comment must start in the line's first column: remove the indentation."
    name, sep, value = text.lstrip("-").partition("=")
    if text in ("-", "--"):  # absl's end of the flags: what follows is an argument, refused
        return None
    if not text.startswith("-"):
        # A flag without dashes, or a stray word: either way absl reads a positional argument.
        return f"it is not a flag. Write it as --{_flag(name, sep, value)}."
    if name.split() != [name]:
        return (f"each line is one argument, with the value after '=', not a space. "
                f"Write it as --{_flag(name, sep, value)}.")  # fmt: skip
    if known is not None and not known(name):
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean --{close[0]}?" if close else ""
        return f"there is no flag --{name}.{hint} --helpfull lists the flags."
    return None


def unreadable(line: Line) -> str | None:
    """Why the nested flagfile ``line`` names cannot be read, and the fix, or None when
    ``line`` names none (:func:`flag_lines` yields such a line only when it cannot be read)."""
    if not line.text.startswith(tuple(d + "=" for d in _DIRECTIVES)):
        return None
    nested = os.path.expanduser(line.text.split("=", 1)[1].strip())
    where = os.path.abspath(nested)
    if os.path.isabs(nested):
        return f"cannot read the flagfile {where}: check the path."
    # absl opens it from the current folder, where a user expects the flagfile's own.
    beside = os.path.join(os.path.dirname(os.path.abspath(line.path)), nested)
    return (f"cannot read the flagfile {where}: a relative path in a flagfile is read from the "
            f"current folder ({os.getcwd()}), not from the flagfile's. Give its absolute path, "
            f"e.g. --flagfile={beside}, or run from the folder it is relative to.")


def _flag(name: str, sep: str, value: str) -> str:
    """``name sep value`` as one ``NAME=VALUE`` (or ``NAME``) argument."""
    words = (name + sep + value).split(None, 1) if not sep else [name, value]
    return "=".join(w.strip() for w in words if w.strip())


def check(argv: list[str], program: str, known: Callable[[str], bool] | None = None,
          names: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Exits with status 2 and one line per bad flagfile line (file, number, text, fix)."""
    lines = [line for path in flagfile_paths(argv) for line in flag_lines(path)]
    if any(arg.lstrip("-").startswith("undefok") for arg in [*argv, *(t for *_, t in lines)]):
        known = None  # names absl is told to accept though undefined
    errors = [f"{line.path}:{line.number}: {line.text!r}: {message}" for line in lines
              if (message := unreadable(line) or problem(line.text, known, names))]  # fmt: skip
    if errors:
        print(f"{program}: error in a flagfile:", *errors, sep="\n  ", file=sys.stderr)
        sys.exit(USAGE_EXIT_STATUS)
