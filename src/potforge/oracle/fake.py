"""Deliberately faulty and counting calculators, for testing how potforge survives oracles.

Use them through the import-path oracle, e.g. ``get_oracle("python:potforge.oracle.fake:FaultyEMT",
{"mode": "hang"})``. ``counter_file`` makes every *completed* calculation append one line (the
structure's hash) to a file, so a test can prove each oracle call happened exactly once;
``start_file`` does the same when a calculation *starts*, so a calculation that was killed before
it finished (and was then computed again) shows up as a hash started twice.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ase.calculators.calculator import CalculationFailed, SCFError, all_changes
from ase.calculators.emt import EMT

from potforge.hashing import structure_hash


class FaultyEMT(EMT):
    """EMT that misbehaves on request.

    mode: ``ok`` | ``hang`` (sleeps forever) | ``crash`` (raises) | ``scf`` (raises SCFError) |
    ``nan`` (non-finite energy) | ``shape`` (forces of the wrong shape) | ``exit`` (kills its
    own process) | ``flaky`` (fails the first ``fail_times`` calls per structure, using
    ``state_dir`` to remember). ``delay_s`` sleeps before answering.
    """

    def __init__(
        self,
        mode: str = "ok",
        delay_s: float = 0.0,
        counter_file: str | None = None,
        start_file: str | None = None,
        fail_times: int = 1,
        state_dir: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.delay_s = delay_s
        self.counter_file = counter_file
        self.start_file = start_file
        self.fail_times = fail_times
        self.state_dir = state_dir

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if self.start_file:
            _append_line(self.start_file, structure_hash(atoms))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.mode == "hang":
            while True:
                time.sleep(3600)
        if self.mode == "crash":
            raise CalculationFailed("deliberate crash")
        if self.mode == "scf":
            raise SCFError("SCF did not converge in 300 iterations (deliberate)")
        if self.mode == "exit":
            os._exit(13)
        if self.mode == "flaky" and self.state_dir:
            marker = os.path.join(self.state_dir, structure_hash(atoms))
            tries = int(Path(marker).read_text()) if os.path.exists(marker) else 0
            with open(marker, "w") as f:
                f.write(str(tries + 1))
            if tries < self.fail_times:
                raise CalculationFailed(f"deliberate flaky failure {tries + 1}")
        super().calculate(atoms, properties, system_changes)
        if self.mode == "nan":
            self.results["energy"] = float("nan")
            self.results["free_energy"] = float("nan")
        if self.mode == "shape":
            self.results["forces"] = self.results["forces"][:-1]
        if self.counter_file:
            _append_line(self.counter_file, structure_hash(atoms))


def _append_line(path: str, line: str) -> None:
    """Append one line durably (a test counts the lines after SIGKILLs)."""
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def sleep_interval(seconds: float) -> tuple[float, float]:
    """Sleep ``seconds`` in whatever worker runs this; return (start, end) wall-clock times
    (for tests of how many tasks an engine runs at once)."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time()
