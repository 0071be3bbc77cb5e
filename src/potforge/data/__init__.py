"""The dataset store (ASE database: SQLite by default, PostgreSQL by URL), splits, import/export,
and the fast path from stored frames to training tensors."""

from potforge.data.store import SPLITS, DatasetStore, Provenance, split_of

__all__ = ["SPLITS", "DatasetStore", "Provenance", "split_of"]
