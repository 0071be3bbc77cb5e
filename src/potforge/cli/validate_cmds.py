"""``potforge validate``: property benchmarks of a model against a reference oracle (paper III)."""

from __future__ import annotations
