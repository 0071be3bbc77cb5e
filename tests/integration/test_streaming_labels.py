"""Streaming labels: a running generation's frames go to the oracle once they are certain to be
among its ``max_flagged`` in trajectory-id order, never a frame beyond the cut, none twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from potforge import durable
from potforge.campaign import ingest_flagged
from potforge.campaign_sampling import FrameStream
from potforge.data import DatasetStore
from potforge.engine import Engine, EngineConfig
from potforge.labeling import StreamingLabeller, label_pending
from potforge.oracle import get_oracle
from potforge.records import FlaggedFrame, SampleSummary, TrajectoryOutcome
from potforge.structures import RandomCellSpec, random_cells


def write_frames(sdir: Path, n: int) -> None:
    for k, atoms in enumerate(random_cells(RandomCellSpec(box_min_A=6.0, box_max_A=6.5), n, seed=9)):
        FlaggedFrame(
            traj=f"g000-t{k:05d}",
            generation=0,
            outcome="flagged",
            reason="energy",
            sim_time_fs=10.0 * k,
            numbers=atoms.numbers.tolist(),
            positions=atoms.positions.tolist(),
            cell=atoms.cell.array.tolist(),
        ).write(sdir / "flagged" / f"g000-t{k:05d}.json")


def publish(sdir: Path, worker: int, known: dict[int, bool]) -> None:
    durable.write_json(sdir / "exchange" / f"w{worker:03d}.json", {str(k): v for k, v in known.items()})


def test_frames_stream_in_id_order_up_to_the_cut_and_are_labelled_once(tmp_path):
    counter = tmp_path / "calls.txt"
    oracle = get_oracle("python:potforge.oracle.fake:FaultyEMT", {"counter_file": str(counter)})
    store = DatasetStore(tmp_path / "c.db")
    sdir = tmp_path / "sampling"
    write_frames(sdir, 6)  # trajectories 0..5 of generation 0 all end flagged, in their own time
    calls = lambda: len(counter.read_text().split()) if counter.exists() else 0  # noqa: E731
    labelled = lambda: sorted(a.info["trajectory"] for a in store.frames(source="active_learning"))  # noqa: E731
    with Engine(EngineConfig(kind="threads", max_workers=2), run_dir=tmp_path / "parsl") as engine:
        stream = FrameStream(
            store,
            sdir,
            workers=2,
            max_flagged=3,
            max_trajectories=6,
            generation=0,
            oracle_name=oracle.name,
            oracle_hash=oracle.settings_hash(),
        )
        labeller = StreamingLabeller(store, oracle, engine, tmp_path / "work", chunk_size=2)
        # worker 0 has finished 0 and 2, worker 1 nothing: only 0 is certain (1 may yet flag)
        publish(sdir, 0, {0: True, 2: True})
        assert stream.step() == 1
        labeller.step()
        labeller.finish()
        assert calls() == 1 and labelled() == ["g000-t00000"]
        # 1 ran its budget: 2 is certain too
        publish(sdir, 1, {1: False})
        assert stream.step() == 1
        labeller.step()
        # 3 and 5 flagged: 0, 2, 3 are the generation's three (4 is still running, but past the
        # third event it does not matter); 5 lies beyond the cut and is never labelled
        publish(sdir, 1, {1: False, 3: True, 5: True})
        assert stream.step() == 1
        labeller.step()
        labeller.finish()
        assert stream.queued == [0, 2, 3]
        assert labelled() == ["g000-t00000", "g000-t00002", "g000-t00003"] and calls() == 3
        # the generation ends: the queue stage and the label stage find nothing left to do
        outcomes = [
            TrajectoryOutcome(traj=f"g000-t{k:05d}", outcome=o, time_fs=10.0)
            for k, o in enumerate(["flagged", "survived", "flagged", "flagged", "unused", "unused"])
        ]
        SampleSummary(
            flagged=3,
            total_steps=1,
            walltime_s=1.0,
            stop_reason="3 flagged frames",
            outcomes=outcomes,
            flagged_trajectories=["g000-t00000", "g000-t00002", "g000-t00003"],
        ).write(sdir / "summary.json")
        assert ingest_flagged(store, sdir, oracle.name, oracle.settings_hash()) == 0
        report = label_pending(store, oracle, engine, tmp_path / "work")
    assert report.labelled == 0 and calls() == 3  # no frame computed twice, none beyond the cut
    assert store.count(source="active_learning", generation=1) == 3  # queued for generation 1, as without streaming
    energies = [a.get_potential_energy() for a in store.frames(source="active_learning")]
    assert np.all(np.isfinite(energies))
