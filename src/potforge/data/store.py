"""The dataset store: every labelled frame, on ASE's database (SQLite file or PostgreSQL URL).

One row per (structure, oracle) task, through its whole life:

    pending --label--> ok <--plausibility policy--> implausible (kept, re-admitted if the policy allows)
       |  \\--failure--> failed (attempts += 1) --...--> quarantined (after max_attempts)

A row keeps the atoms; once labelled, energy/forces/stress in a single-point calculator; and
key-value pairs: ``status``, ``task_id``, ``frame_hash``, ``oracle``, ``oracle_hash``,
``source`` (random | fcc_melt | active_learning | import | ...), ``split`` (train/val/test by a
deterministic hash of the frame), ``generation``, ``trajectory``, ``sim_time_fs``,
``energy_std_eV``, ``force_std_max_eV_A``, ``attempts``, ``failure_kind``, ``failure_message``.
Identical frames (same structure, same oracle) are stored once. Each label is committed as
it arrives; SQLite's and PostgreSQL's transactions make every write all-or-nothing.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect

from potforge.errors import DataError
from potforge.hashing import structure_hash, task_id, unit_interval

SPLITS = ("train", "val", "test")
STATUSES = ("pending", "ok", "failed", "quarantined", "implausible")


@dataclass
class Provenance:
    """Where a frame came from. Times in fs, uncertainties in eV and eV/Å."""

    source: str
    generation: int = 0
    trajectory: str = ""
    sim_time_fs: float = 0.0
    energy_std_eV: float | None = None
    force_std_max_eV_A: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def key_value_pairs(self) -> dict[str, Any]:
        kvp: dict[str, Any] = {
            "source": self.source,
            "generation": int(self.generation),
            "trajectory": str(self.trajectory),
            "sim_time_fs": float(self.sim_time_fs),
        }
        if self.energy_std_eV is not None:
            kvp["energy_std_eV"] = float(self.energy_std_eV)
        if self.force_std_max_eV_A is not None:
            kvp["force_std_max_eV_A"] = float(self.force_std_max_eV_A)
        return kvp


def split_of(frame_hash: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """train/val/test from a hash of the frame: stable across runs, machines and orderings."""
    u = unit_interval(frame_hash)
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"


def _reads_as_number(text: str) -> bool:
    """ASE's database refuses string values that parse as numbers ("2024", "70e02")."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def _redacted(exc: Exception, target: str) -> str:
    """An error's text with the target's password (if the driver echoed it) masked."""
    from urllib.parse import urlsplit

    text = str(exc)
    password = urlsplit(target).password if _is_url(target) else None
    return text.replace(password, "***") if password else text


def redact(target: str | Path) -> str:
    """A dataset target fit to print or record: a URL's password replaced by ``***``. (Leave the
    password out of the URL altogether: libpq then reads ``$PGPASSWORD`` or ``~/.pgpass``.)"""
    text = str(target)
    if not _is_url(text):
        return text
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _create_sqlite(path: Path) -> None:
    """Create an empty ASE database at ``path`` all at once. ASE creates its tables one
    statement at a time and writes its version row last; a process killed in between leaves a
    file that ASE can never open again. So initialise a private file and link it into place;
    the private files of creators killed before (dead processes of this host, or older than an
    hour) are removed first."""
    host = socket.gethostname().replace(".", "_")
    for old in path.parent.glob(f".{path.name}.*.creating"):
        old_host, _, pid = old.name[len(path.name) + 2 : -len(".creating")].rpartition(".")
        try:
            stale = (old_host == host and pid.isdigit() and not _alive(int(pid))) or (
                time.time() - old.stat().st_mtime > 3600
            )
        except OSError:
            continue  # removed by another process meanwhile
        if stale:
            old.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{host}.{os.getpid()}.creating")
    try:
        connect(str(tmp), type="db", append=True, use_lock_file=False).count()
        try:
            os.link(tmp, path)  # never over a file another process created meanwhile
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DatasetStore:
    """An ASE database of labelled frames. ``target``: a file path (SQLite) or a PostgreSQL URL."""

    def __init__(self, target: str | Path, split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> None:
        self.target = str(target)
        #: the target as messages and records show it (no password)
        self.name = redact(self.target)
        self.split_fractions = split_fractions
        if not _is_url(self.target):
            path = Path(self.target)
            if path.exists() and path.is_dir():
                raise DataError(f"{path} is a directory, not a database file")
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                _create_sqlite(path)
        try:
            # No ASE lock file: it is an exclusively created file that a SIGKILLed writer leaves
            # behind, and every later write then waits on it forever. SQLite's own locks die
            # with the process that held them, which is the guarantee a crash-proof store needs.
            self.db = connect(
                self.target,
                type="postgresql" if _is_url(self.target) else "db",
                append=True,
                use_lock_file=False,
            )
            self.db.count()  # fail now, not later, on an unreadable file or unreachable server
        except Exception as exc:
            raise DataError(
                f"cannot open dataset {self.name}: {type(exc).__name__}: {_redacted(exc, self.target)}"
            ) from None

    # --- writing ---------------------------------------------------------------------------
    def _add(self, atoms: Atoms, status: str, provenance: Provenance, oracle_name: str, oracle_hash: str, **extra):
        """Write one new row for (structure, oracle); None if that task is already stored."""
        fh = structure_hash(atoms)
        tid = task_id(fh, oracle_hash)
        if self.db.count(task_id=tid):
            return None
        names = {"source": provenance.source, "trajectory": provenance.trajectory, "oracle": oracle_name}
        for key, value in {**names, "oracle_hash": oracle_hash}.items():
            if _reads_as_number(str(value)):
                raise DataError(f"{key} {value!r} would be read back as a number; give it a name with a letter in it")
        clean = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        results = extra.pop("results", None)
        if results is not None:
            clean.calc = SinglePointCalculator(clean, **results)
        self.db.write(
            clean,
            status=status,
            task_id=tid,
            frame_hash=fh,
            oracle=oracle_name,
            oracle_hash=oracle_hash,
            split=split_of(fh, self.split_fractions),
            attempts=0,
            data={"provenance_extra": provenance.extra} if provenance.extra else {},
            **provenance.key_value_pairs(),
        )
        return tid

    def add_pending(self, atoms: Atoms, provenance: Provenance, oracle_name: str, oracle_hash: str) -> str | None:
        """Register a frame to be labelled. Returns its task id, or None if already present."""
        return self._add(atoms, "pending", provenance, oracle_name, oracle_hash)

    def record_result(self, result: dict[str, Any], max_attempts: int = 3) -> str:
        """Store one oracle result (the JSON written by the oracle worker). Idempotent: a task
        that is already labelled is left alone. Returns the row's new status."""
        row = self._row(result["task_id"])
        if row is None:  # a result computed before its row's oracle hash was migrated
            rows = list(self.db.select(legacy_task_id=result["task_id"], limit=1))
            row = rows[0] if rows else None
        if row is None:
            raise DataError(f"no pending frame for task {result['task_id']}")
        if row.status == "ok":
            return "ok"
        if result["status"] == "ok":
            atoms = row.toatoms()
            stress = None if result.get("stress") is None else np.asarray(result["stress"], dtype=np.float64)
            atoms.calc = SinglePointCalculator(
                atoms,
                energy=float(result["energy"]),
                free_energy=float(result["energy"]),
                forces=np.asarray(result["forces"], dtype=np.float64),
                **({"stress": stress} if stress is not None else {}),
            )
            self.db.update(
                row.id,
                atoms=atoms,
                status="ok",
                walltime_s=float(result.get("walltime_s", 0.0)),
                delete_keys=["failure_kind", "failure_message"],
            )
            return "ok"
        attempts = int(row.get("attempts", 0)) + 1
        status = "quarantined" if attempts >= max_attempts or result["kind"] == "setup" else "failed"
        self.db.update(
            row.id,
            status=status,
            attempts=attempts,
            failure_kind=str(result["kind"]),
            failure_message=str(result["message"])[:1000],
        )
        return status

    def add_labelled(self, atoms: Atoms, provenance: Provenance, oracle_name: str, oracle_hash: str) -> str | None:
        """Store a frame that already carries energy/forces (imports). None if already present."""
        results = atoms.calc.results if atoms.calc is not None else {}
        if "energy" not in results or "forces" not in results:
            raise DataError("an imported frame needs energy and forces")
        kept = {k: results[k] for k in ("energy", "free_energy", "forces", "stress") if k in results}
        return self._add(atoms, "ok", provenance, oracle_name, oracle_hash, results=kept)

    def adopt_labels(self, oracle_hash: str, legacy_hashes: list[str]) -> int:
        """Move rows stored under an oracle's ``legacy_hashes`` (see
        :meth:`potforge.oracle.base.Oracle.legacy_hashes`) to ``oracle_hash``, with the task ids
        that hash gives them, so they are neither labelled again nor left out of training. The
        old task id stays on the row (``legacy_task_id``: a result still in an inbox finds it)
        and the alias in the metadata (``oracle_aliases``). Idempotent; returns the rows moved."""
        moved = 0
        aliases = dict(self.metadata().get("oracle_aliases", {}))
        for old in legacy_hashes:
            if old == oracle_hash:
                continue
            for row in list(self.db.select(oracle_hash=old)):
                new_tid = task_id(row.frame_hash, oracle_hash)
                if self.db.count(task_id=new_tid):
                    continue  # labelled again under the new hash already: keep both rows
                self.db.update(row.id, oracle_hash=oracle_hash, task_id=new_tid, legacy_task_id=row.task_id)
                moved += 1
            if aliases.get(old) != oracle_hash and (moved or self.db.count(oracle_hash=oracle_hash)):
                aliases[old] = oracle_hash
        if aliases != self.metadata().get("oracle_aliases", {}):
            self.set_metadata(oracle_aliases=aliases)
        return moved

    # --- reading ---------------------------------------------------------------------------
    def _row(self, tid: str):
        rows = list(self.db.select(task_id=tid, limit=1))
        return rows[0] if rows else None

    def status_of(self, tid: str) -> str | None:
        row = self._row(tid)
        return None if row is None else row.status

    def pending_tasks(self, oracle_hash: str | None = None) -> list[tuple[str, Atoms]]:
        """(task_id, atoms) of every frame still to label (pending or failed, not quarantined)."""
        out = []
        for status in ("pending", "failed"):
            query = {"status": status}
            if oracle_hash:
                query["oracle_hash"] = oracle_hash
            out.extend((row.task_id, row.toatoms()) for row in self.db.select(**query))
        return out

    def frames(self, **query: Any) -> Iterator[Atoms]:
        """Labelled frames (status ok) matching ``query`` (ASE db key=value selection), with
        their energies/forces/stress attached and key-value pairs in ``atoms.info``."""
        for row in self.db.select(status="ok", **query):
            atoms = row.toatoms(add_additional_information=False)
            atoms.info.update(row.key_value_pairs)
            atoms.info["row_id"] = row.id
            yield atoms

    def count(self, **query: Any) -> int:
        return self.db.count(**query)

    def oracle_calls(self, oracle_hash: str) -> int:
        """Calculations ``oracle_hash`` has returned into this dataset: every label and every
        recorded failure (each failed attempt was a calculation)."""
        calls = 0
        for row in self.db.select(oracle_hash=oracle_hash):
            kvp = row.key_value_pairs
            calls += int(kvp.get("attempts", 0)) + (kvp.get("status") in ("ok", "implausible"))
        return calls

    def info(self) -> dict[str, Any]:
        """Counts per source/split/status, atom counts, density and energy ranges, failures."""
        by_status = {s: self.db.count(status=s) for s in STATUSES}
        sources: dict[str, dict[str, int]] = {}
        n_atoms, density, energy = [], [], []
        failures: dict[str, int] = {}
        examples: list[str] = []
        for row in self.db.select():
            kvp = row.key_value_pairs
            status = kvp.get("status", "ok")
            if status == "ok":
                src = sources.setdefault(kvp.get("source", "?"), {s: 0 for s in SPLITS})
                src[kvp.get("split", "train")] = src.get(kvp.get("split", "train"), 0) + 1
                n_atoms.append(row.natoms)
                if row.get("energy") is not None:
                    energy.append(row.energy / row.natoms)
                if row.get("volume") and row.pbc.all():
                    density.append(row.mass * 1.66053906660 / row.volume)
            elif status in ("failed", "quarantined", "implausible"):
                kind = f"{status}:{kvp.get('failure_kind', '?')}"
                failures[kind] = failures.get(kind, 0) + 1
                if len(examples) < 5:
                    examples.append(f"{kvp.get('task_id')}: {kind}: {kvp.get('failure_message', '')[:120]}")

        def span(values: list[float]) -> list[float] | None:
            return [float(min(values)), float(max(values))] if values else None

        return {
            "target": self.name,
            "status": by_status,
            "sources": sources,
            "atoms_per_frame": span(n_atoms),
            "total_atoms": int(sum(n_atoms)),
            "density_g_cm3": span(density),
            "energy_per_atom_eV": span(energy),
            "failures": failures,
            "failure_examples": examples,
        }

    def metadata(self) -> dict[str, Any]:
        return dict(self.db.metadata)

    def set_metadata(self, **kwargs: Any) -> None:
        md = dict(self.db.metadata)
        md.update(json.loads(json.dumps(kwargs)))
        self.db.metadata = md
