"""Two paths exchanged in one step, where the filesystem can: a folder replaced with no gap.

``os.replace`` puts a file over a file in one rename, but not a folder over a non-empty folder:
a SavedModel replaced by ``os.replace`` takes two renames (the old one aside, the new one in),
and a process killed between them leaves neither under the name. Linux's ``renameat2`` with
``RENAME_EXCHANGE`` (3.15+; ext4, xfs, btrfs, tmpfs, among others) swaps the two names in
one step instead: a kill leaves the old artifact or the new one, never neither.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2

# The errors that mean "this system or filesystem cannot exchange": the caller falls back to
# two renames. EXDEV: overlayfs can refuse to move a folder of a lower layer in one step.
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV}


def _renameat2():
    """glibc's ``renameat2`` (2.28+), or None where there is none (macOS, musl, older glibc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]  # fmt: skip
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2()


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swaps what the two existing paths name, in one step. False, with nothing changed, where
    the system or the filesystem cannot (the caller then renames twice); any other failure
    (a missing path, no permission) raises ``OSError``."""
    if _RENAMEAT2 is None:
        return False
    a, b = os.fsencode(a), os.fsencode(b)
    if _RENAMEAT2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), os.fsdecode(a), None, os.fsdecode(b))
