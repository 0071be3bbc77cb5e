"""Per-system random numbers that are a pure function of (key, step, purpose).

Each system draws from a Philox counter-based generator (Salmon et al., SC'11) keyed by its own
64-bit key, with the counter set from its step and the purpose of the draw. So there is no
generator state to carry or checkpoint: a resumed state draws the same numbers as an unbroken
run, and removing or adding a system never changes another's noise.
"""

from __future__ import annotations

import numpy as np
import torch

#: what a draw is for: each purpose has its own counter space
THERMOSTAT, BAROSTAT, VELOCITIES = 0, 1, 2


def _generator(key: int, step: int, purpose: int) -> np.random.Generator:
    # the low counter words advance as numbers are drawn; step and purpose sit in the high ones
    return np.random.Generator(np.random.Philox(key=key & 0xFFFFFFFFFFFFFFFF, counter=[0, 0, purpose, step]))


def normal(
    keys: torch.Tensor, steps: torch.Tensor, counts: torch.Tensor, width: int, purpose: int, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal numbers (Σ counts, width): ``counts[b]`` rows for system b, from its key
    at its step."""
    parts = [
        _generator(int(k), int(s), purpose).standard_normal((int(n), width))
        for k, s, n in zip(keys.tolist(), steps.tolist(), counts.tolist(), strict=True)
    ]
    return torch.from_numpy(np.concatenate(parts) if parts else np.zeros((0, width))).to(dtype)
