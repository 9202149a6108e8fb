"""The choices and checks of options whose values other modules own (their registries and
lists), asked of those modules when an option is checked or its flag defined.
"""

from __future__ import annotations

from fitnets_tf import custom_code


def dataset_problem(name: str) -> str | None:
    from fitnets_tf import data

    return data.dataset_problem(name)


def image_size_problem(image_size) -> str | None:
    from fitnets_tf import data

    return data.image_size_problem(image_size)


def resize_modes() -> tuple[str, ...]:  # the first is the default (data.DEFAULT_RESIZE_MODE)
    from fitnets_tf import data

    return data.RESIZE_MODES


def preprocessings() -> tuple[str, ...]:  # the first is the default (data.load's)
    from fitnets_tf import preprocessing

    return ("auto", *preprocessing.MODES)


def maxout_ties() -> tuple[str, ...]:  # the first is the default (the layers')
    from fitnets_tf import maxout

    return maxout.TIES


def modes() -> tuple[str, ...]:
    from fitnets_tf import stages

    return stages.MODES


def custom_modules_problem(names) -> str | None:
    return "; ".join(filter(None, map(custom_code.problem, names))) or None


def strategies() -> tuple[str, ...]:
    from fitnets_tf import distribute

    return distribute.STRATEGIES
