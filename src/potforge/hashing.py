"""Content hashes that name structures and labelling tasks, exact to the bit."""

from __future__ import annotations

import hashlib

import numpy as np
from ase import Atoms


def structure_hash(atoms: Atoms) -> str:
    """Hash of atomic numbers, positions, cell and pbc (bitwise: a rattled copy differs),
    prefixed with a letter so that it always reads back as a string."""
    h = hashlib.sha256()
    for arr in (atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc):
        h.update(np.ascontiguousarray(arr).tobytes())
    return "s" + h.hexdigest()[:20]


def task_id(frame_hash: str, oracle_hash: str) -> str:
    """Identity of 'label this structure with this oracle': the unit that is never repeated.
    Prefixed with a letter: an all-digit hex string would be read back as a number."""
    return "t" + hashlib.sha256(f"{frame_hash}:{oracle_hash}".encode()).hexdigest()[:20]


def unit_interval(key: str, salt: str = "split") -> float:
    """A deterministic number in [0, 1) from a string (used for train/val/test splits)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
