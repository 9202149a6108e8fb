"""Side-by-side timing on a shared, noisy machine.

Every candidate is timed once per *round*, the rounds are repeated, and the order inside a
round rotates so that no candidate always runs first (warm caches) or last (a neighbour's job
ramping up). A ratio is computed per round, from timings taken seconds apart, and its spread
over rounds is the noise we report: the median of per-round ratios, with the interquartile
range.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(
    candidates: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, one call per round, ``repeats`` rounds."""
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in round_order(names, r):
            start = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - start)
    return times


def quartiles(values: list[float]) -> dict[str, float]:
    """Median and interquartile range (inclusive method; the range is 0 for one value)."""
    if len(values) == 1:
        return {"median": values[0], "q1": values[0], "q3": values[0]}
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3}


def ratio(times: dict[str, list[float]], numerator: str, *denominator: str) -> dict[str, float]:
    """Per-round ``numerator / sum(denominator)``, summarised by :func:`quartiles`."""
    per_round = [n / sum(times[d][i] for d in denominator) for i, n in enumerate(times[numerator])]
    # The ratio of minima: contention from other jobs only ever adds time, so the fastest
    # call of each candidate is the least disturbed one. Reported next to the median.
    best = min(times[numerator]) / sum(min(times[d]) for d in denominator)
    return {**quartiles(per_round), "of_minima": best}


def summary(times: dict[str, list[float]], per_call: int = 1) -> dict[str, dict[str, float]]:
    """Median milliseconds per unit (a call runs ``per_call`` units: steps, batches)."""
    return {
        name: {"ms": 1000.0 * statistics.median(t) / per_call, **_spread(t)}
        for name, t in times.items()
    }


def _spread(values: list[float]) -> dict[str, float]:
    q = quartiles(values)
    # Relative half-IQR: a unit-free noise figure for one candidate.
    return {"noise": (q["q3"] - q["q1"]) / (2 * q["median"]) if q["median"] else 0.0}


def round_order(names: list[str], r: int) -> list[str]:
    """The call order of round ``r``: ``names`` rotated by ``r``, as :func:`interleaved` runs them."""
    k = r % len(names)
    return names[k:] + names[:k]
