"""A long-lived, isolated oracle process for many small calculations (MD driven by a reference
method, validation single points): ``python -m potforge.oracle.session WORKDIR``.

Every calculation runs in that child, never in the caller, with a wall-time limit: a call that
runs past ``timeout_s`` gets the child's whole process group killed (a DFT code's MPI ranks
included) and raises :class:`~potforge.oracle.OracleTimeout`; a child that dies raises
:class:`~potforge.oracle.OracleCrashed`. Either way the next call starts a fresh child.

Unlike :func:`potforge.oracle.runner.label_many`, which stores every result durably because a
label is precious, a session answers in memory: what it computes (forces along a trajectory, a
validation energy the caller caches itself) is cheap to recompute or stored by the caller.
Calculations may name a ``key``: the child keeps one calculator per key and tells it only what
changed, so a classical potential reuses its neighbour list along an MD trajectory.

Frames on the pipes are length-prefixed pickles. The child writes them to a private copy of its
stdout and sends fd 1 to its log, so a code that prints cannot corrupt the protocol.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from potforge.oracle.base import FAILURE_KINDS, Label, Oracle, OracleCrashed, OracleFailure, OracleTimeout

MODULE = "potforge.oracle.session"
_HEADER = struct.Struct("<Q")
#: calculators the child keeps (by key), least recently used dropped first
KEPT_CALCULATORS = 64


def _send(stream: BinaryIO, payload: Any) -> None:
    blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(blob)) + blob)
    stream.flush()


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    """``n`` bytes from ``fd``; None at end of file; TimeoutError past ``deadline``."""
    out = bytearray()
    while len(out) < n:
        wait = None if deadline is None else max(deadline - time.time(), 0.0)
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, n - len(out))
        if not chunk:
            return None
        out += chunk
    return bytes(out)


def _receive(fd: int, deadline: float | None = None) -> Any | None:
    head = _read_exact(fd, _HEADER.size, deadline)
    if head is None:
        return None
    blob = _read_exact(fd, _HEADER.unpack(head)[0], deadline)
    return None if blob is None else pickle.loads(blob)


class OracleSession:
    """Calculations by ``oracle`` in a child process, one at a time, each within ``timeout_s``.

    Use as a context manager, or call :meth:`close`. ``workdir`` holds the calculators' files
    and the child's log (``session.log``).
    """

    def __init__(self, oracle: Oracle, workdir: str | Path, timeout_s: float | None = 3600.0) -> None:
        self.oracle = oracle
        self.workdir = Path(workdir)
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self.n_calculations = 0

    def __enter__(self) -> OracleSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> subprocess.Popen:
        from potforge.oracle.runner import child_environment, set_parent_death_signal

        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "session.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", MODULE, str(self.workdir)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                preexec_fn=set_parent_death_signal if sys.platform.startswith("linux") else None,
                env=child_environment(),
            )
        finally:
            log.close()
        _send(proc.stdin, self.oracle.spec())
        return proc

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream:
                stream.close()

    def close(self) -> None:
        """Stop the child (and anything it started)."""
        self._kill()

    def _log_tail(self) -> str:
        try:
            lines = (self.workdir / "session.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def compute(self, atoms: Atoms, key: str | None = None) -> Label:
        """Energy (force-consistent), forces and stress of ``atoms``; raises an
        :class:`~potforge.oracle.OracleFailure` subclass. With ``key``, the calculator of that
        key is reused (it must always see the same number of atoms)."""
        if self._proc is None or self._proc.poll() is not None:
            self._kill()
            self._proc = self._start()
        request = {
            "key": key,
            "numbers": atoms.numbers,
            "positions": np.asarray(atoms.positions, dtype=float),
            "cell": np.asarray(atoms.cell.array, dtype=float),
            "pbc": np.asarray(atoms.pbc, dtype=bool),
        }
        started = time.time()
        try:
            _send(self._proc.stdin, request)
            deadline = None if self.timeout_s is None else started + self.timeout_s
            reply = _receive(self._proc.stdout.fileno(), deadline)
        except TimeoutError:
            self._kill()
            raise OracleTimeout(f"{self.oracle.name}: killed after {self.timeout_s:g} s") from None
        except (BrokenPipeError, OSError):
            reply = None
        if reply is None:
            code = self._proc.poll() if self._proc else None
            tail = self._log_tail()
            self._kill()
            raise OracleCrashed(f"{self.oracle.name} process died (exit code {code}) {tail}".strip())
        self.n_calculations += 1
        if not reply["ok"]:
            raise FAILURE_KINDS.get(reply["kind"], OracleCrashed)(reply["message"])
        return Label(reply["energy"], reply["forces"], reply["stress"], {"walltime_s": time.time() - started})


class SessionCalculator(Calculator):
    """An ASE calculator whose every calculation runs in an :class:`OracleSession` (so an ASE
    optimiser or MD driver in this process never runs the reference code itself). ``key``
    names the calculator the child keeps for this one (see :meth:`OracleSession.compute`)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, session: OracleSession, key: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session
        self.key = key

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        label = self.session.compute(self.atoms, key=self.key)
        self.results = {"energy": label.energy, "free_energy": label.energy, "forces": np.asarray(label.forces)}
        if label.stress is not None:
            self.results["stress"] = np.asarray(label.stress)


# --- the child ---------------------------------------------------------------------------------
def _serve(workdir: Path) -> None:
    from potforge.oracle import oracle_from_spec
    from potforge.oracle.base import validate_label

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the code prints goes to the log
    spec = _receive(0)
    if spec is None:
        return
    oracle = oracle_from_spec(spec)
    kept: OrderedDict[str, tuple[Atoms, Any]] = OrderedDict()
    n = 0
    while True:
        req = _receive(0)
        if req is None:  # the parent closed the pipe: done
            return
        atoms = Atoms(numbers=req["numbers"], positions=req["positions"], cell=req["cell"], pbc=req["pbc"])
        n += 1
        try:
            if req["key"] is None:
                label = oracle.compute(atoms, workdir / f"calc-{os.getpid()}-{n}")
            else:
                label = _compute_kept(oracle, kept, req["key"], atoms, workdir, validate_label)
            reply = {"ok": True, "energy": label.energy, "forces": label.forces, "stress": label.stress}
        except OracleFailure as exc:
            reply = {"ok": False, "kind": exc.kind, "message": str(exc)}
        except Exception as exc:
            failure = oracle.classify(exc)
            reply = {"ok": False, "kind": failure.kind, "message": str(failure)}
        _send(out, reply)


def _compute_kept(oracle, kept, key, atoms, workdir, validate_label) -> Label:
    entry = kept.get(key)
    if entry is not None:
        kept.move_to_end(key)
    if entry is None or len(entry[0]) != len(atoms):
        import hashlib

        directory = workdir / f"kept-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        directory.mkdir(parents=True, exist_ok=True)
        work = atoms.copy()
        entry = kept[key] = (work, oracle.make_calculator(work, directory))
        while len(kept) > KEPT_CALCULATORS:
            kept.popitem(last=False)
    work, calc = entry
    work.set_cell(atoms.cell, scale_atoms=False)
    work.positions = atoms.positions
    # tell the calculator only what changed, so classical potentials keep their neighbour lists
    changes = all_changes if getattr(calc, "atoms", None) is None else calc.check_state(work)
    try:
        calc.calculate(work, ["energy", "forces", "stress"], changes)
    except Exception as exc:
        raise oracle.classify(exc) from None
    results = calc.results
    energy = results.get("free_energy", results["energy"])
    label = Label(float(energy), np.asarray(results["forces"]), np.asarray(results.get("stress")))
    return validate_label(label, len(work), bool(work.pbc.all()))


if __name__ == "__main__":
    _serve(Path(sys.argv[1]))
