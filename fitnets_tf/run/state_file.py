"""Reading ``run_state.json``: its own checksum, and the configuration it was written for.

:class:`~fitnets_tf.run.resume.RunState` reads it to resume; the training CLI reads it before it
replaces ``flags.txt``, so that a command refused for another configuration leaves the run's
flags as they were (``--flagfile=RUN/flags.txt`` must keep re-running *that* run, and an export
reads its dataset from them).
"""

from __future__ import annotations

import json
import os
import pathlib

from fitnets_tf.config import upgrade_fingerprint
from fitnets_tf.errors import ConfigMismatchError
from fitnets_tf.run.checksums import content_sha256
from fitnets_tf.run.layout import RunLayout


def parse(text: str) -> dict:
    """The run state in ``text``; ``ValueError`` if it is damaged."""
    data = json.loads(text)
    if not (isinstance(data, dict) and isinstance(data.get("stages"), dict) and "config" in data):
        raise ValueError("it is not a run state")
    recorded = data.pop("sha256", None)  # None: written before run states carried one
    if recorded is not None and recorded != content_sha256(data):
        raise ValueError("its content does not match its sha256")
    data.setdefault("finished", [])
    return data


def check_same_config(stored: dict, fingerprint: dict, workdir) -> None:
    """Refuses ``fingerprint`` unless it is the ``stored`` one, naming each difference."""
    # Both in today's form: a run written before an option existed used its default.
    stored, fingerprint = upgrade_fingerprint(stored), upgrade_fingerprint(fingerprint)
    differences = [
        f"{key}: {stored.get(key)!r} there, {fingerprint.get(key)!r} now"
        for key in sorted(set(stored) | set(fingerprint))
        if stored.get(key) != fingerprint.get(key)
    ]
    if differences:
        raise ConfigMismatchError(
            f"The run directory {str(workdir)!r} holds a run with a different configuration "
            f"({'; '.join(differences)}). Results of two configurations are never mixed: use a "
            "new --workdir, or delete this one to start over."
        )


def refuse_other_config(workdir: str | os.PathLike, fingerprint: dict) -> None:
    """What :class:`~fitnets_tf.run.resume.RunState` will refuse, checked before any write.

    Reads the run state (or, when it is damaged, its previous version) as the run will, but
    quietly: damage is reported, and handled, when the run itself reads it.

    Raises:
        ConfigMismatchError: the directory holds a run of another configuration.
    """
    files = RunLayout(pathlib.Path(workdir))
    if not files.run_state.exists():
        return  # a new run (RunState ignores a lone previous version too)
    for path in (files.run_state, files.run_state_previous):
        try:
            stored = parse(path.read_text())
        except (OSError, ValueError):
            continue
        check_same_config(stored["config"], fingerprint, files.root)
        return
