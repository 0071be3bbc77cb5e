"""Plausibility of labels: an oracle that returns absurd energies or forces (a classical potential
far outside its fitted range, a DFT run that converged to nonsense) must not poison training.

A label is *implausible* when its energy per atom lies more than ``max_energy_above_reference``
above a reference (a low quantile of the same oracle's labels in the dataset: the lowest
energies the oracle gives for this system, robust to a few absurdly low ones), or when any force
component exceeds ``max_force``. Implausible labels keep their status of their own
(``implausible``), with the reason, and are never deleted: the policy is re-applied to every
label of the oracle after each labelling, so a changed policy (or a reference that moved as the
dataset grew) re-admits them. Training reads only ``ok`` labels.

Defaults: 3 eV/atom above the 5th percentile, and 50 eV/Å. For scale: random cells of aluminium
at 1.8 Å minimum distance and up to 1.5× the crystal's density sit 1–2 eV/atom above fcc with
forces up to ~10–20 eV/Å; a repulsion that gives +150 eV/atom and 5,000 eV/Å is not a label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

IMPLAUSIBLE = "implausible"


class PlausibilityPolicy(BaseModel):
    """Bounds a label must satisfy to be trained on (None disables a bound)."""

    model_config = ConfigDict(extra="forbid")
    max_energy_above_reference_eV_per_atom: float | None = Field(3.0, gt=0)
    reference_quantile: float = Field(0.05, ge=0, le=0.5, description="of the oracle's energies per atom")
    max_force_eV_per_A: float | None = Field(50.0, gt=0)
    warn_fraction: float = Field(0.2, gt=0, le=1, description="warn when more of an oracle's labels are implausible")


@dataclass
class PlausibilityReport:
    labels: int
    implausible: int
    newly_implausible: int
    readmitted: int
    reference_eV_per_atom: float | None

    @property
    def fraction(self) -> float:
        return self.implausible / self.labels if self.labels else 0.0


def apply_policy(store, oracle_hash: str, policy: PlausibilityPolicy) -> PlausibilityReport:
    """Mark the oracle's labels ``ok`` or ``implausible`` under ``policy`` (in one transaction)."""
    rows = [r for r in store.db.select(oracle_hash=oracle_hash) if r.get("status") in ("ok", IMPLAUSIBLE)]
    rows = [r for r in rows if r.get("energy") is not None]
    if not rows:
        return PlausibilityReport(0, 0, 0, 0, None)
    per_atom = np.array([r.energy / r.natoms for r in rows])
    fmax = np.array([float(np.abs(r.forces).max()) if r.natoms else 0.0 for r in rows])
    reference = float(np.quantile(per_atom, policy.reference_quantile))
    new_bad = readmitted = bad = 0
    with store.db:
        for row, e, f in zip(rows, per_atom, fmax, strict=True):
            reasons = []
            limit = policy.max_energy_above_reference_eV_per_atom
            if limit is not None and e > reference + limit:
                reasons.append(f"energy {e:.3g} eV/atom is {e - reference:.3g} above the reference {reference:.3g}")
            if policy.max_force_eV_per_A is not None and f > policy.max_force_eV_per_A:
                reasons.append(f"a force component of {f:.3g} eV/Å")
            status = row.get("status")
            if reasons:
                bad += 1
                if status != IMPLAUSIBLE:
                    new_bad += 1
                    store.db.update(row.id, status=IMPLAUSIBLE, failure_kind=IMPLAUSIBLE,
                                    failure_message="; ".join(reasons)[:1000])  # fmt: skip
            elif status == IMPLAUSIBLE:
                readmitted += 1
                store.db.update(row.id, status="ok", delete_keys=["failure_kind", "failure_message"])
    return PlausibilityReport(len(rows), bad, new_bad, readmitted, reference)
