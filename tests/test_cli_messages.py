"""The one paragraph the programs print for an operating-system error a user can fix."""

import errno

import pytest

from fitnets_tf.cli.common import user_message


@pytest.mark.parametrize(
    "code, fix",
    [(errno.ENOSPC, "Free space there"), (errno.EDQUOT, "Free space there"),
     (errno.EACCES, "Fix its permissions or choose another path"),
     (errno.EROFS, "Fix its permissions or choose another path")],
)  # fmt: skip
def test_a_write_error_names_its_own_fix(code, fix):
    # A read-only or forbidden folder was told to "free space".
    message = user_message(OSError(code, "x", "/runs/r/ckpt"))
    assert message.startswith("Cannot write (/runs/r/ckpt): ") and f". {fix}, then re-run." in message


def test_any_other_os_error_is_a_bug_with_its_traceback():
    assert user_message(OSError(errno.EBADF, "x")) is None
