"""Uncertainty-driven sampling (paper II.B): trajectories of Langevin MD from random disordered
cells, many at once on the batched engine (:mod:`potforge.md`), each stopped alone when the
ensemble disagrees, its slot refilled with the next trajectory.

Outputs, all under ``out_dir`` and all crash-safe:
* ``flagged/<traj>.json`` — every stopped trajectory's frame (:class:`~potforge.records.FlaggedFrame`),
  written atomically the moment it is found;
* ``state.pt`` — the sampler's state (the MD state itself plus the bookkeeping), written every
  ``checkpoint_every_s``; a restarted sampler continues from it exactly;
* ``summary.json`` — the generation's :class:`~potforge.records.SampleSummary`.

Trajectory k of generation g draws its cell, drive and noise from seed (seed, g, k), so a run is
reproducible and independent of how many trajectories run side by side. Every
``census_every_fs`` each running trajectory's structure is classified by common-neighbour
analysis (:mod:`potforge.analysis`): the census shows what the sampler explored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from potforge import durable, md
from potforge.errors import ConfigError, StructureError
from potforge.md.forces import Forces
from potforge.model.interface import Potential
from potforge.records import CRYSTALLINE_THRESHOLD, CensusPoint, FlaggedFrame, SampleSummary, TrajectoryOutcome
from potforge.sample.config import SamplerConfig, UncertaintyConfig
from potforge.sample.fanout import FINISHED, PUBLISH_EVERY_S, Exchange, global_cut
from potforge.sample.schedule import draw_drive
from potforge.sample.survival import median_time_to_flag, survival_at
from potforge.structures import RandomCellSpec, random_cell

STATE_FILE = "state.pt"
SUMMARY_FILE = "summary.json"
FLAGGED_DIR = "flagged"
_FORMAT = "potforge-sampler-2"


def census_of(atoms, time_fs: float) -> CensusPoint:
    from potforge.analysis import structure_fractions

    return CensusPoint(time_fs=time_fs, **structure_fractions(atoms))


def exceeded(measures: dict[str, float], u: UncertaintyConfig) -> list[str]:
    """Names of the uncertainty measures above their thresholds."""
    limits = {
        "energy_eV_per_sqrt_atom": u.energy_eV_per_sqrt_atom,
        "force_mean_eV_per_A": u.force_mean_eV_per_A,
        "force_max_eV_per_A": u.force_max_eV_per_A,
    }
    return [k for k, lim in limits.items() if lim is not None and measures[k] > lim]


def min_distance_A(atoms, within_A: float) -> float:
    """Shortest interatomic distance (periodic images included) up to ``within_A``, else inf."""
    from potforge.model.neighbors import AtomsBatch, build_graph

    batch = AtomsBatch(
        torch.tensor(atoms.positions),
        torch.zeros(len(atoms), dtype=torch.long),
        torch.zeros(len(atoms), dtype=torch.long),
        torch.tensor(atoms.cell.array)[None],
        torch.ones(1, 3, dtype=torch.bool),
    )
    graph = build_graph(batch, within_A, 1, min_distance=0.0)
    if graph.n_edges == 0:
        return math.inf
    return float(graph.edge_vectors(batch.positions, batch.cells).norm(dim=1).min())


class Sampler:
    """The trajectory manager of one generation. ``cell_spec`` gives the random starting cells."""

    def __init__(
        self,
        model: Potential,
        config: SamplerConfig,
        cell_spec: RandomCellSpec,
        out_dir: str | Path,
        seed: int,
        generation: int,
        target_fs: float | None = None,
        starts: list[FlaggedFrame] | None = None,
        worker: int = 0,
        workers: int = 1,
        flagged_dir: str | Path | None = None,
        exchange: Exchange | None = None,
    ) -> None:
        """``worker`` of ``workers``: this sampler runs trajectory ids worker, worker + workers,
        ... (:mod:`potforge.sample.fanout`), stores its flagged frames in ``flagged_dir``
        (default ``out_dir/flagged``) and shares its finished trajectories through ``exchange``."""
        if not 0 <= worker < workers:
            raise ValueError(f"worker {worker} of {workers}")
        self.worker, self.workers = worker, workers
        self.exchange = exchange
        self.model = model
        # the previous generation's flagged frames that trajectories 0, 1, ... continue from
        self.starts = list(starts or [])[: int(config.continue_fraction * config.max_trajectories)]
        self.target_fs = config.schedule.t_max_fs if target_fs is None else target_fs
        self.config = config
        self.cell_spec = cell_spec
        self.out_dir = Path(out_dir)
        self.flagged_dir = Path(flagged_dir) if flagged_dir is not None else self.out_dir / FLAGGED_DIR
        self.seed = seed
        self.generation = generation
        self.forces = md.EnsembleForces(model, skin_A=config.neighbor_skin_A)
        p = config.pressure
        self.integrator = md.Langevin(
            config.timestep_fs, config.friction_per_fs, p.barostat_tau_fs, p.compressibility_per_GPa, p.barostat_every
        )
        self.state: md.MDState | None = None
        self.next_traj = worker  # the next id this sampler starts
        self._published = True  # whether the exchange holds every finished trajectory
        self.total_steps = 0
        self.walltime_s = 0.0
        self.outcomes: dict[int, TrajectoryOutcome] = {}
        self.census: dict[int, list[CensusPoint]] = {}
        self.parents: dict[int, str] = {k: f.traj for k, f in enumerate(self.starts)}
        # the last configuration of each running trajectory that passed the stability checks
        self.sane: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}

    def traj_id(self, k: int) -> str:
        return f"g{self.generation:03d}-t{k:05d}"

    # --- trajectories ----------------------------------------------------------------------------
    def _spawn(self, k: int) -> md.MDState:
        """Trajectory ``k`` at rest-free start: its random cell, drive and thermal momenta (no
        forces yet)."""
        rng = np.random.default_rng([self.seed, self.generation, k])
        atoms = random_cell(self.cell_spec, rng)
        if k < len(self.starts):  # continue a trajectory of the previous generation instead
            atoms = self.starts[k].atoms()
        drive = draw_drive(self.config, rng)
        if self.config.member_driven_fraction > 0 and rng.uniform() < self.config.member_driven_fraction:
            drive = dataclasses.replace(drive, member=int(rng.integers(self.model.n_members)))
        key = md.stream_key(self.seed, self.generation, k, 1)
        state = md.thermalize(md.from_atoms([atoms], [drive], [key], uids=[k]))
        self.sane[k] = (state.positions.clone(), state.cells[0].clone(), 0.0)
        self.census[k] = [census_of(state.to_atoms(0), 0.0)]
        return state

    def _events_so_far(self) -> int:
        return sum(o.is_event for o in self.outcomes.values())

    def _known(self) -> dict[int, bool]:
        """id -> is an event, for every finished trajectory this sampler knows of (its own and
        what the other workers published)."""
        known = dict(self.exchange.peers()) if self.exchange is not None else {}
        known.update({k: o.is_event for k, o in self.outcomes.items() if o.outcome in FINISHED})
        return known

    def _events_below(self, k: int) -> int:
        if self.exchange is None:  # alone: every finished trajectory lies below the next one
            return self._events_so_far()
        return sum(event for j, event in self._known().items() if j < k)

    def _fill(self) -> None:
        """Start trajectories (in id order) into free slots, their forces in one batched call."""
        cfg = self.config
        running = 0 if self.state is None else self.state.n_systems
        fresh = []
        while running + len(fresh) < cfg.replicas and self.next_traj < cfg.max_trajectories:
            if self._events_below(self.next_traj) >= cfg.max_flagged:
                break  # the max_flagged-th event lies below this trajectory: it would not be used
            fresh.append(self._spawn(self.next_traj))
            self.next_traj += self.workers
        if not fresh:
            return
        new = md.concat(fresh)
        while new.n_systems:
            try:
                new = md.evaluate(new, self.forces)[0]
                break
            except md.UnstableSystems as exc:  # starts the model cannot evaluate: recorded, skipped
                for b, why in exc.reasons.items():
                    self._finish(new, b, "unstable", why, {})
                new = new.select([b for b in range(new.n_systems) if b not in exc.reasons])
        if new.n_systems:
            self.state = new if self.state is None or not self.state.n_systems else md.concat([self.state, new])

    def _cut(self) -> int | None:
        """The id j of the ``max_flagged``-th event if trajectories 0..j are all finished (by
        this sampler or, fanned out, by any worker)."""
        return global_cut(self._known(), self.config.max_flagged, self.config.max_trajectories)

    def _finish(
        self, state: md.MDState, b: int, outcome: str, reason: str, measures: dict, atoms: Atoms | None = None
    ) -> None:
        """Record system ``b`` of ``state`` as ended (its frame stored if it is an event: ``atoms``
        where given, else the system itself)."""
        k = int(state.uids[b])
        t = float(state.time_fs[b])
        n = int(state.counts()[b])
        if outcome in ("flagged", "unstable"):
            if outcome == "unstable":
                positions, cell, t = self.sane[k]
                atoms = state.to_atoms(b, wrap=False)
                atoms.set_cell(cell.double().numpy(), scale_atoms=False)
                atoms.positions = positions.double().numpy()
                atoms.wrap()
            elif atoms is None:
                atoms = state.to_atoms(b)
            drive = state.drives[b]
            point = census_of(atoms, t)
            frame = FlaggedFrame(
                traj=self.traj_id(k),
                generation=self.generation,
                outcome=outcome,
                reason=reason,
                sim_time_fs=t,
                numbers=atoms.numbers.tolist(),
                positions=atoms.positions.tolist(),
                cell=atoms.cell.array.tolist(),
                uncertainty=measures,
                schedule=drive.temperature_K.as_dict(),
                strain=None if drive.strain is None else drive.strain.as_dict(),
                pressure=None if drive.pressure_GPa is None else drive.pressure_GPa.as_dict(),
                target_temperature_K=drive.temperature_K(t),
                target_pressure_GPa=None if drive.pressure_GPa is None else drive.pressure_GPa(t),
                census=point,
                parent=self.parents.get(k),
                member=drive.member,
            )
            frame.write(self.flagged_dir / f"{self.traj_id(k)}.json")
            self.census.setdefault(k, []).append(point)
        self.outcomes[k] = TrajectoryOutcome(
            traj=self.traj_id(k), outcome=outcome, reason=reason, time_fs=t, steps=int(state.steps[b]),
            n_atoms=n, uncertainty=measures, census=self.census.pop(k, []), parent=self.parents.get(k),
        )  # fmt: skip
        self.sane.pop(k, None)
        self._published = False

    # --- one step --------------------------------------------------------------------------------
    def _step(self) -> None:
        cfg = self.config
        state = self.state
        assert state is not None
        due = [b for b in range(state.n_systems) if (int(state.steps[b]) + 1) % cfg.uncertainty.check_every == 0]
        try:
            new, forces = md.step(state, self.forces, self.integrator, members=due)
        except md.UnstableSystems as exc:
            # stop those alone; the step is a pure function of the state, so the others repeat it
            for b, why in exc.reasons.items():
                self._finish(state, b, "unstable", why, {})
            self.state = state.select([b for b in range(state.n_systems) if b not in exc.reasons])
            return
        self.total_steps += new.n_systems
        stop = self._check(new, forces, due)
        stop |= self._census(state, new, stop)
        self.state = new.select([b for b in range(new.n_systems) if b not in stop])

    def _check(self, state: md.MDState, forces: Forces, due: list[int]) -> set[int]:
        """Stop rules on the systems just checked; returns those that stop."""
        cfg = self.config
        stop: set[int] = set()
        if not due:
            return stop
        spread = forces.spread
        assert spread is not None
        measures = {k: v.tolist() for k, v in spread.measures(state.counts()[spread.systems]).items()}
        temps = state.temperature_K().tolist()
        s = cfg.stability
        for i, b in enumerate(spread.systems):
            m = {k: float(v[i]) for k, v in measures.items()}
            target = state.drives[b].temperature_K(float(state.time_fs[b]))
            limit = max(s.max_temperature_factor * target, s.max_temperature_K)
            bad = None
            if temps[b] > limit:
                bad = f"runaway temperature {temps[b]:.0f} K"
            else:
                try:
                    dmin = min_distance_A(state.to_atoms(b), s.min_distance_A + 0.01)
                except StructureError as exc:
                    bad = str(exc)
                else:
                    if dmin < s.min_distance_A:
                        bad = f"atoms {dmin:.2f} Å apart"
            if bad:
                self._finish(state, b, "unstable", bad, m)
                stop.add(b)
                continue
            over = exceeded(m, cfg.uncertainty)
            if over:
                self._finish(state, b, "flagged", ", ".join(over), m)
                stop.add(b)
                continue
            k = int(state.uids[b])
            sl = state.system_atoms(b)
            self.sane[k] = (state.positions[sl].clone(), state.cells[b].clone(), float(state.time_fs[b]))
            if float(state.time_fs[b]) >= state.drives[b].temperature_K.t_max_fs - 1e-9:
                if not (cfg.quench.enabled and self._quench(state, b)):
                    self._finish(state, b, "survived", "ran its budget (t_max)", m)
                stop.add(b)
        return stop

    def _quench(self, state: md.MDState, b: int, what: str = "quenched") -> bool:
        """Minimise system ``b`` under the model; True if the ensemble disagrees at the minimum
        (then recorded as the trajectory's flagged frame, at its current time)."""
        from potforge.sample.quench import quench

        q = self.config.quench
        atoms, m = quench(self.model, state.to_atoms(b), q, relax_cell=q.relaxes_cell(int(state.uids[b])))
        over = exceeded(m, q.uncertainty or self.config.uncertainty)
        if not over:
            return False
        if min_distance_A(atoms, self.config.stability.min_distance_A + 0.01) < self.config.stability.min_distance_A:
            return False  # a collapsed minimum is the model's failure, not a frame worth labelling
        self._finish(state, b, "flagged", f"{what}: " + ", ".join(over), m, atoms=atoms)
        return True

    def _census(self, before: md.MDState, after: md.MDState, stopped: set[int]) -> set[int]:
        """Census snapshots of the running systems whose time crossed a multiple of
        ``census_every_fs``; with ``quench.on_crystal`` a trajectory's first crystalline snapshot
        is quenched too. Returns the systems that this flagged."""
        every = self.config.census_every_fs
        q = self.config.quench
        crossed = torch.floor(after.time_fs / every) > torch.floor(before.time_fs / every)
        flagged: set[int] = set()
        for b in torch.nonzero(crossed).flatten().tolist():
            if b in stopped:
                continue
            k = int(after.uids[b])
            history = self.census.setdefault(k, [])
            point = census_of(after.to_atoms(b), float(after.time_fs[b]))
            first_crystal = point.crystalline > CRYSTALLINE_THRESHOLD and all(
                c.crystalline <= CRYSTALLINE_THRESHOLD for c in history
            )
            history.append(point)
            if q.enabled and q.on_crystal and first_crystal and self._quench(after, b, "quenched crystal"):
                flagged.add(b)
        return flagged

    # --- checkpoints -----------------------------------------------------------------------------
    def save(self) -> None:
        book = {
            "next_traj": self.next_traj,
            "total_steps": self.total_steps,
            "walltime_s": self.walltime_s,
            "outcomes": {str(k): o.model_dump(mode="json") for k, o in self.outcomes.items()},
            "census": {str(k): [c.model_dump() for c in v] for k, v in self.census.items()},
            "sane_time_fs": {str(k): v[2] for k, v in self.sane.items()},
        }
        payload = {
            "format": _FORMAT,
            "book": json.dumps(book),
            "md": None if self.state is None or not self.state.n_systems else md.state_to_dict(self.state),
            "sane_positions": {str(k): v[0] for k, v in self.sane.items()},
            "sane_cells": {str(k): v[1] for k, v in self.sane.items()},
        }
        durable.write_torch(self.out_dir / STATE_FILE, payload)

    def publish(self) -> None:
        """Checkpoint, then tell the other workers which trajectories have finished: only what a
        checkpoint holds is published, so a kill never takes a published outcome back."""
        self.save()
        if self.exchange is not None:
            self.exchange.publish(self.outcomes.items())
        self._published = True

    def load(self, path: Path) -> None:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ConfigError(
                f"{path} is a sampling checkpoint of an older potforge (its MD engine changed); remove "
                f"{path.parent} and run again to redo this generation's sampling"
            )
        book = json.loads(payload["book"])
        self.next_traj = int(book["next_traj"])
        self.total_steps = int(book["total_steps"])
        self.walltime_s = float(book["walltime_s"])
        self.outcomes = {int(k): TrajectoryOutcome.model_validate(v) for k, v in book["outcomes"].items()}
        self.census = {int(k): [CensusPoint.model_validate(c) for c in v] for k, v in book["census"].items()}
        self.sane = {
            int(k): (payload["sane_positions"][k], payload["sane_cells"][k], float(t))
            for k, t in book["sane_time_fs"].items()
        }
        self.state = None if payload["md"] is None else md.state_from_dict(payload["md"])

    # --- the loop --------------------------------------------------------------------------------
    def run(self, progress: Callable[[dict], None] | None = None) -> SampleSummary:
        """Sample until ``max_flagged`` frames (in trajectory-id order), every trajectory has
        finished, or the wall-time cap."""
        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state_path = self.out_dir / STATE_FILE
        if state_path.exists():
            self.load(state_path)
        start = time.time() - self.walltime_s
        last_save = time.time()
        if self.exchange is not None:
            self.publish()  # what the checkpoint holds (the file may predate a kill)
        while True:
            cut = self._cut()
            if cut is not None:
                stop_reason = f"{cfg.max_flagged} flagged frames"
                break
            if cfg.max_walltime_s is not None and time.time() - start > cfg.max_walltime_s:
                stop_reason = "wall-time budget"
                break
            self._fill()
            if self.state is None or not self.state.n_systems:
                stop_reason = "every trajectory finished"
                break
            self._step()
            self.walltime_s = time.time() - start
            due = cfg.checkpoint_every_s
            if self.exchange is not None and not self._published:
                due = min(due, PUBLISH_EVERY_S)
            if time.time() - last_save > due:
                self.publish()
                last_save = time.time()
            if progress:
                progress(self.status())
        summary = self._summarise(stop_reason, cut)
        summary.write(self.out_dir / SUMMARY_FILE)
        self.publish()
        return summary

    def _summarise(self, stop_reason: str, cut: int | None) -> SampleSummary:
        # trajectories still running are censored at their time (the wall-time cap), or unused
        # when they lie beyond the max_flagged cut
        if self.state is not None:
            for b in range(self.state.n_systems):
                self._finish(self.state, b, "running" if cut is None else "unused", stop_reason, {})
            self.state = None
        if cut is not None:
            for k, o in self.outcomes.items():
                if k > cut:
                    o.outcome = "unused"
        ordered = [self.outcomes[k] for k in sorted(self.outcomes)]
        events = [o for o in ordered if o.is_event]
        flagged = [o.traj for o in events[: self.config.max_flagged]]
        used = [o for o in ordered if o.outcome != "unused"]
        return SampleSummary(
            flagged=len(flagged),
            trajectories=len(used),
            total_steps=self.total_steps,
            walltime_s=self.walltime_s,
            stop_reason=stop_reason,
            median_time_to_flag_fs=median_time_to_flag(used),
            survival_at_target=survival_at(used, self.target_fs),
            max_observed_fs=max((o.time_fs for o in used), default=None),
            censored=sum(o.outcome in ("survived", "running") for o in used),
            flagged_trajectories=flagged,
            outcomes=ordered,
        )

    def status(self) -> dict:
        used = list(self.outcomes.values())
        return {
            "replicas": 0 if self.state is None else self.state.n_systems,
            "trajectories": len(range(self.worker, self.next_traj, self.workers)),
            "flagged": self._events_so_far(),
            "total_steps": self.total_steps,
            "median_time_to_flag_fs": median_time_to_flag(used),
            "walltime_s": self.walltime_s,
        }
