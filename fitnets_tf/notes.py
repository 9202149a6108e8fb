"""What the library tells its user while it works, routed as Keras routes its own messages.

On stdout by default, beside Keras' progress bars (a notebook shows both); after
``keras.config.disable_interactive_logging()`` (a server, a job whose logs are collected) in
absl's log at INFO level, with Keras' own messages: one switch redirects both.

Inside :func:`once` (a run, a search) a note is told the first time only: the same model is
loaded again for each mode of a run and each trial of a search, and its note (a teacher's
softmax left out) said once per trial buried the trials' lines.
"""

from __future__ import annotations

import contextlib

import keras
from absl import logging

_told: set[str] | None = None  # the notes told in the current once() scope (None: no scope)


@contextlib.contextmanager
def once():
    """A scope in which each distinct note is told once; nested scopes share the outer one's."""
    global _told
    outer = _told
    _told = set() if outer is None else outer
    try:
        yield
    finally:
        _told = outer


def note(message: str) -> None:
    if _told is not None:
        if message in _told:
            return
        _told.add(message)
    if keras.config.is_interactive_logging_enabled():
        print(message, flush=True)  # the stdout of the moment: a notebook's or pytest's capture
    else:
        logging.info(message)
