"""The hint pairs as the command line gives them: ``--hints`` (``auto``, or
``teacher_layer:student_layer`` pairs) and ``--hint_weights``, read and checked as text, before
any model exists (:mod:`fitnets_tf.hint_path` checks them against the models)."""

from __future__ import annotations

import math
import re

from fitnets_tf.errors import ConfigError


def pair_name(hint_layer: str, guided_layer: str) -> str:
    """How a pair is named in logs (``hint_loss/<pair>``) and in the run directory."""
    return f"{hint_layer}:{guided_layer}"


def parse_hints(items) -> list[tuple[str, str]] | str:
    """The ``hints`` of the command line (``--hints=auto`` or ``--hints=a:b,c:d``, split at
    the commas) as the :class:`~fitnets_tf.Distiller` takes them: ``"auto"`` or pairs.

    A pair splits at its one ``:`` that is not part of ``::``, so a hint may be an ONNX
    tensor named with ``::`` (``onnx::Relu_23:conv2``).

    Raises:
        ConfigError: not ``auto`` alone, or not one or more distinct ``hint:guided`` pairs.
    """
    items = tuple(items)
    if items == ("auto",):
        return "auto"
    usage = ("hints takes 'auto' or one or more 'teacher_layer:student_layer' pairs separated "
             "by commas (e.g. pool2:pool4,pool3:pool6; an ONNX tensor's '::' is part of its "
             f"name: onnx::Relu_23:conv2); received {','.join(items)!r}")  # fmt: skip
    pairs = [_split_pair(item) for item in items]
    if not pairs or any(len(p) != 2 or not all(p) for p in pairs):
        raise ConfigError(usage)
    if len(set(pairs)) != len(pairs):
        raise ConfigError(f"{usage}, which names a pair twice")
    return pairs


def _split_pair(item: str) -> tuple[str, ...]:
    return tuple(re.split(r"(?<!:):(?!:)", item))


def hints_problem(items) -> str | None:
    """What :func:`parse_hints` refuses in ``items``, one sentence, or None."""
    try:
        parse_hints(items)
    except ConfigError as e:
        return str(e)
    return None


def weights_problem(weights) -> str | None:
    """What is wrong with the ``hint_weights`` of the command line, or None."""
    if not weights or any(not 0 < w < math.inf for w in weights):
        given = ",".join(map(str, weights)) or "none"
        return f"hint_weights must be numbers > 0 and finite, got {given}"
    return None
