"""``potforge table1``: the paper's Table I experiment (active learning vs FCC/Melt data)."""

from __future__ import annotations
