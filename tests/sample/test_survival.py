"""Kaplan–Meier time to flag against hand-computed values."""

from __future__ import annotations

import pytest

from potforge.records import TrajectoryOutcome
from potforge.sample.survival import kaplan_meier, median_time_to_flag, survival_at


def _o(t: float, outcome: str) -> TrajectoryOutcome:
    return TrajectoryOutcome(traj=f"t{t}", outcome=outcome, time_fs=t)


def test_without_censoring_survival_is_the_empirical_fraction():
    outcomes = [_o(t, "flagged") for t in (10, 20, 30, 40)]
    t, s = kaplan_meier(outcomes)
    assert list(t) == [10, 20, 30, 40] and list(s) == pytest.approx([0.75, 0.5, 0.25, 0.0])
    assert median_time_to_flag(outcomes) == 20
    assert survival_at(outcomes, 25) == 0.5 and survival_at(outcomes, 5) == 1.0


def test_censored_trajectories_leave_the_risk_set_without_counting_as_flags():
    """Events at 10 and 30, censored at 20 and 50: S(10) = 3/4, S(30) = 3/4 · (1 − 1/2) = 3/8
    (two still at risk at 30: the one flagged there and the one censored at 50)."""
    outcomes = [_o(10, "flagged"), _o(20, "survived"), _o(30, "unstable"), _o(50, "running")]
    assert survival_at(outcomes, 15) == pytest.approx(0.75)
    assert survival_at(outcomes, 40) == pytest.approx(0.375)
    assert median_time_to_flag(outcomes) == 30
    # treating the censored times as flag times would put the median at 20: the old bias
    assert median_time_to_flag([_o(t, "flagged") for t in (10, 20, 30, 50)]) == 20


def test_a_budget_alone_never_reaches_the_target():
    """Every trajectory cut at its 2 ps budget, one flagged at 1.1 ps: survival at 2 ps is 7/8,
    and a median exists only where it fell to one half (it never did)."""
    outcomes = [_o(1100, "flagged")] + [_o(2000, "survived") for _ in range(7)]
    assert survival_at(outcomes, 2000) == pytest.approx(7 / 8)
    assert median_time_to_flag(outcomes) is None
    unused = [*outcomes, _o(5, "unused")]
    assert survival_at(unused, 2000) == pytest.approx(7 / 8)  # unused trajectories do not count


def test_trajectories_cut_short_by_a_wall_time_cap_say_nothing_about_the_target():
    """16 trajectories cut at 3 ps by the cap, 3 flagged earlier: the estimate stops at 3 ps;
    carrying S(3 ps) = 13/16 on to an 8 ps target would let the cap pass for convergence."""
    outcomes = [_o(t, "flagged") for t in (400, 900, 1500)] + [_o(3000, "running") for _ in range(16)]
    assert survival_at(outcomes, 3000) == pytest.approx(16 / 19)
    assert survival_at(outcomes, 8000) is None


def test_the_stop_rule_demands_the_configured_share_of_long_lived_trajectories(tmp_path):
    """10 trajectories, 3 flagged before the 8 ps target and 7 that ran it out: S(8 ps) = 0.7,
    which passes the median rule (0.5) and fails a rule that wants 80 % to survive."""
    from potforge.campaign import converged
    from potforge.config import CampaignConfig
    from potforge.records import SampleSummary

    outcomes = [_o(t, "flagged") for t in (300, 2000, 5000)] + [_o(8000, "survived") for _ in range(7)]
    SampleSummary(flagged=3, trajectories=10, total_steps=1, walltime_s=1.0, stop_reason="done",
                  outcomes=outcomes).write(tmp_path / "summary.json")  # fmt: skip
    base = {"sampler": {"schedule": {"t_max_fs": 8000}}, "loop": {"target_median_time_to_flag_fs": 8000}}
    assert converged(CampaignConfig.model_validate(base), tmp_path) == (True, pytest.approx(0.7))
    strict = {**base, "loop": {**base["loop"], "target_survival_fraction": 0.8}}
    assert converged(CampaignConfig.model_validate(strict), tmp_path) == (False, pytest.approx(0.7))
