"""The structure census labels known structures, and the gates judge physics correctly."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from potforge.properties import PropertyValue, judge, lowest_crystal, verdict
from potforge.records import CensusPoint, TrajectoryOutcome
from potforge.sample.sampler import census_of


@pytest.fixture(scope="module")
def structures():
    rng = np.random.default_rng(0)
    fcc = bulk("Al", "fcc", a=4.05, cubic=True).repeat(3)
    hcp = bulk("Al", "hcp", a=2.86).repeat((4, 4, 3))
    bcc = bulk("Al", "bcc", a=3.23, cubic=True).repeat(4)
    for a in (fcc, hcp, bcc):
        a.rattle(0.03, seed=1)  # thermal noise does not fool it
    liquid = Atoms("Al108", positions=rng.uniform(0, 11.6, (108, 3)), cell=[11.6] * 3, pbc=True)
    return {"fcc": fcc, "hcp": hcp, "bcc": bcc, "liquid": liquid}


def test_census_labels_crystals_and_liquid(structures):
    fcc, hcp, bcc = (census_of(structures[k], 0.0) for k in ("fcc", "hcp", "bcc"))
    liquid = census_of(structures["liquid"], 0.0)
    assert fcc.fcc > 0.95 and hcp.hcp > 0.95 and bcc.bcc > 0.95
    assert fcc.close_packed > 0.95 and hcp.close_packed > 0.95 and bcc.close_packed < 0.05
    assert liquid.crystalline < 0.05 and liquid.other > 0.9
    assert all(abs(sum(getattr(c, k) for k in ("fcc", "hcp", "bcc", "ico", "other")) - 1) < 1e-12
               for c in (fcc, hcp, bcc, liquid))  # fmt: skip


def test_first_crystalline_time_is_the_first_census_above_the_threshold():
    points = [CensusPoint(time_fs=t, fcc=f, hcp=0, bcc=0, ico=0, other=1 - f) for t, f in
              ((0, 0.0), (1000, 0.2), (2000, 0.45), (3000, 0.1))]  # fmt: skip
    o = TrajectoryOutcome(traj="t", outcome="flagged", time_fs=3000, census=points)
    assert o.first_crystalline_fs == 2000


def _values(**kw):
    base = {"a0_A": (3.99, 4.00, "Å"), "B_GPa": (40.0, 39.0, "GPa"), "eps_hcp_meV": (1.0, -0.07, "meV/atom"),
            "eps_bcc_meV": (6.0, 5.2, "meV/atom"), "bain_bcc_meV": (9.0, 9.6, "meV/atom")}  # fmt: skip
    base.update(kw)
    return {k: PropertyValue(model=m, reference=r, unit=u) for k, (m, r, u) in base.items()}


def test_quick_gates_and_the_ground_state_verdict():
    good = _values()
    results = judge(good, "quick")
    assert all(r.passed for r in results)
    assert any("lowest-energy crystal (fcc) is the oracle's: close-packed" in line for line in verdict(good, results))
    bad = _values(eps_bcc_meV=(-11.4, 5.2, "meV/atom"), a0_A=(3.874, 3.994, "Å"))  # the demo model
    results = {r.property: r for r in judge(bad, "quick")}
    assert not results["ε_bcc"].passed and not results["a0"].passed and results["B"].passed
    assert lowest_crystal(bad, "model") == "bcc" and lowest_crystal(bad, "reference") == "hcp"  # by 0.07 meV
    lines = verdict(bad, list(results.values()))
    assert any("is bcc, but the oracle's is close-packed" in line for line in lines)
    other = _values(eps_hcp_meV=(-5.0, 20.0, "meV/atom"))  # an oracle that separates them
    assert any("is hcp, but the oracle's is fcc" in line for line in verdict(other, judge(other, "quick")))
    # bcc below fcc is right for an oracle that has it below
    assert judge(_values(eps_bcc_meV=(-3.0, -2.0, "meV/atom")), "quick")[0].passed


def test_relative_and_absolute_gates_at_their_edges():
    v = _values(B_GPa=(39.0 * 1.149, 39.0, "GPa"), eps_hcp_meV=(3.1, 0.0, "meV/atom"))
    r = {x.property: x for x in judge(v, "quick")}
    assert r["B"].passed and not r["ε_hcp"].passed
    strict = {x.property: x for x in judge(v, "strict")}
    assert strict["C11"].passed is None  # not measured, not passed
