"""What the library tells its user while it works, routed as Keras routes its own messages.

On stdout by default, beside Keras' progress bars (a notebook shows both); after
``keras.config.disable_interactive_logging()`` (a server, a job whose logs are collected) in
absl's log at INFO level, with Keras' own messages: one switch redirects both.
"""

from __future__ import annotations

import keras
from absl import logging


def note(message: str) -> None:
    if keras.config.is_interactive_logging_enabled():
        print(message, flush=True)  # the stdout of the moment: a notebook's or pytest's capture
    else:
        logging.info(message)
