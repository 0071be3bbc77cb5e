"""Time to flag as a survival problem: Kaplan–Meier estimates over a generation's trajectories.

A trajectory that was flagged (or became unstable) at time t is an *event* at t. One that ran
its whole budget (survived) or was cut by the wall-time cap (running) is *censored*: it is only
known to outlive its time. Counting censored times as if they were flag times biases the median
down when budgets are short and makes a budget look like convergence; the Kaplan–Meier
estimator uses each censored trajectory exactly as far as it went:

    S(t) = Π_{t_i ≤ t} (1 − d_i / n_i),

with d_i events at t_i and n_i trajectories still at risk (neither flagged nor censored before t_i).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from potforge.records import TrajectoryOutcome


def _times_events(outcomes: Iterable[TrajectoryOutcome]) -> tuple[np.ndarray, np.ndarray]:
    used = [o for o in outcomes if o.outcome != "unused"]
    times = np.array([o.time_fs for o in used], dtype=float)
    events = np.array([o.is_event for o in used], dtype=bool)
    return times, events


def kaplan_meier(outcomes: Iterable[TrajectoryOutcome]) -> tuple[np.ndarray, np.ndarray]:
    """Event times (K,) fs and the survival S just after each (K,)."""
    times, events = _times_events(outcomes)
    grid = np.unique(times[events])
    surv, s = [], 1.0
    for t in grid:
        at_risk = int((times >= t).sum())
        d = int(((times == t) & events).sum())
        s *= 1.0 - d / at_risk
        surv.append(s)
    return grid, np.array(surv)


def survival_at(outcomes: Iterable[TrajectoryOutcome], t_fs: float) -> float | None:
    """S(t_fs): the estimated fraction of trajectories that run past ``t_fs`` unflagged; None
    without trajectories, or when none was followed as far as ``t_fs`` (all cut earlier by a
    wall-time cap): the data then say nothing about t_fs, and a cap must not pass for survival."""
    outcomes = list(outcomes)
    times, _ = _times_events(outcomes)
    if not len(times) or times.max() < t_fs:
        return None
    grid, surv = kaplan_meier(outcomes)
    k = int(np.searchsorted(grid, t_fs, side="right"))
    return 1.0 if k == 0 else float(surv[k - 1])


def median_time_to_flag(outcomes: Iterable[TrajectoryOutcome]) -> float | None:
    """The Kaplan–Meier median (the first event time where S ≤ 1/2), or None when survival
    never falls to one half (the median then exceeds every observed time)."""
    grid, surv = kaplan_meier(outcomes)
    below = np.nonzero(surv <= 0.5)[0]
    return float(grid[below[0]]) if len(below) else None
