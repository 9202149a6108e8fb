"""Searching λ and τ (and optionally λ's end value, the learning rate, τ²) with keras-tuner.

The paper fixes τ = 3 and λ0 = 4 (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015,
section 4); another teacher/student pair may want other values. A trial is stage 2 alone: the
student starts from the hint-trained weights of stage 1, which :func:`tune` computes once, and
learns with the trial's λ0 (annealed by :class:`~fitnets_tf.callbacks.LambdaAnnealing`) and τ.
The objective is the student's best validation accuracy; the test split is never read.

The modules, smallest first:

* :mod:`~fitnets_tf.search.space`: :class:`SearchSpace`, the ranges; each hyperparameter is
  named after its ``fitnets_tf.train`` flag and defaults to the flagfile's value, which is also
  the first trial (the baseline).
* :mod:`~fitnets_tf.search.hypermodel`: :class:`FitNetsHyperModel`; ``build(hp)`` loads the
  teacher and makes the Distiller, ``fit(hp, ...)`` runs stage 2. Trials checkpoint the student
  only, and fail on a NaN.
* :mod:`~fitnets_tf.search.tuners`: :func:`make_tuner`, a keras-tuner ``Tuner`` with a random,
  Bayesian or Hyperband oracle that tries the defaults first.
* :mod:`~fitnets_tf.search.workers`: a distributed search's chief gives up the trials of
  workers that died, or that ran past ``--trial_timeout_minutes``, so the search ends.
* :mod:`~fitnets_tf.search.results`: the trials as rows, CSV, plot and summary.
* :mod:`~fitnets_tf.search.session`: :func:`tune`, stage 1 once, the search (resumable,
  chief/worker capable), the results. ``python -m fitnets_tf.tune`` is its command line.
"""

from fitnets_tf.errors import SearchError
from fitnets_tf.search.hypermodel import FitNetsHyperModel, TrialDistiller
from fitnets_tf.search.results import (
    best_trial,
    completed,
    failure_reason,
    plot_results,
    table,
    trial_rows,
    trial_seconds,
    write_results,
    write_rows_csv,
)
from fitnets_tf.search.session import (
    STAGE_ONE_WAIT_S,
    TuneOptions,
    check_search,
    describe,
    distributed_role,
    hold,
    hypermodel,
    stage_one,
    tune,
)
from fitnets_tf.search.space import OPTIONAL, OPTIONAL_RANGES, SearchSpace
from fitnets_tf.search.tuners import (
    OBJECTIVE,
    ORACLES,
    BayesianOracle,
    HyperbandOracle,
    RandomOracle,
    make_tuner,
)

__all__ = [
    "OBJECTIVE",
    "OPTIONAL",
    "OPTIONAL_RANGES",
    "ORACLES",
    "STAGE_ONE_WAIT_S",
    "BayesianOracle",
    "FitNetsHyperModel",
    "HyperbandOracle",
    "RandomOracle",
    "SearchError",
    "SearchSpace",
    "TrialDistiller",
    "TuneOptions",
    "best_trial",
    "check_search",
    "completed",
    "describe",
    "failure_reason",
    "distributed_role",
    "hold",
    "hypermodel",
    "make_tuner",
    "plot_results",
    "stage_one",
    "table",
    "trial_rows",
    "trial_seconds",
    "tune",
    "write_results",
    "write_rows_csv",
]
