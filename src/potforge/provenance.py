"""The provenance invariant of a campaign (the paper's "no human guidance"): its dataset holds
only random disordered cells and frames the sampler reached from them by MD.

:func:`violations` checks every frame of a campaign's dataset against the campaign's own
record: a ``random`` frame must be exactly the cell its seed draws; an ``active_learning``
frame must come from a trajectory its generation's sampler recorded as stopped there, and that
trajectory must have started from the random cell its seed draws (same atoms). Nothing else —
no hand-built crystal, no imported structure — may be in it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from potforge.hashing import structure_hash
from potforge.records import FlaggedFrame, SampleSummary


def violations(directory: str | Path) -> list[str]:
    """Every frame of the campaign in ``directory`` that breaks the invariant, described; empty
    when the dataset holds only random cells and what the sampler reached from them."""
    from potforge.campaign import dataset_target, generation_dir
    from potforge.config import CampaignConfig
    from potforge.data import DatasetStore
    from potforge.structures import random_cell

    directory = Path(directory)
    config = CampaignConfig.model_validate(yaml.safe_load((directory / "config.yaml").read_text())["config"])
    store = DatasetStore(dataset_target(config, directory))
    sampling_cells = config.loop.sampling_cells or config.initial.cells
    summaries: dict[int, SampleSummary] = {}
    out = []
    for row in store.db.select():
        kvp = row.key_value_pairs
        source, traj = kvp.get("source"), str(kvp.get("trajectory", ""))
        atoms = row.toatoms()
        where = f"frame {kvp.get('task_id')} ({source}, {traj})"
        if source == "random":
            try:
                _, seed, k = traj.split(":")
                expected = random_cell(config.initial.cells, np.random.default_rng([int(seed), int(k)]))
            except ValueError:
                out.append(f"{where}: not a random cell of this campaign")
                continue
            if int(seed) != config.seed or structure_hash(expected) != structure_hash(atoms):
                out.append(f"{where}: not the random cell its seed draws")
        elif source == "active_learning":
            g = int(kvp.get("generation", 0)) - 1  # flagged by generation g, labelled for g + 1
            try:
                k = int(traj.split("-t")[1])
            except (IndexError, ValueError):
                out.append(f"{where}: not a trajectory name")
                continue
            if g not in summaries:
                path = generation_dir(directory, g) / "sampling" / "summary.json"
                if not path.exists():
                    out.append(f"{where}: generation {g} has no sampling record")
                    continue
                summaries[g] = SampleSummary.read(path)
            summary = summaries[g]
            stopped = {o.traj for o in summary.outcomes if o.is_event}
            if traj not in stopped or (
                summary.flagged_trajectories is not None and traj not in summary.flagged_trajectories
            ):
                out.append(f"{where}: generation {g}'s sampler did not stop that trajectory there")
                continue
            frame = FlaggedFrame.read(generation_dir(directory, g) / "sampling" / "flagged" / f"{traj}.json")
            if structure_hash(frame.atoms()) != structure_hash(atoms):
                out.append(f"{where}: not the frame its trajectory stopped on")
            if frame.parent is not None:  # continued from the previous generation's flagged frame
                parent = generation_dir(directory, g - 1) / "sampling" / "flagged" / f"{frame.parent}.json"
                if g < 1 or not parent.exists():
                    out.append(f"{where}: it continued {frame.parent}, which generation {g - 1} did not flag")
                elif sorted(FlaggedFrame.read(parent).numbers) != sorted(atoms.numbers.tolist()):
                    out.append(f"{where}: it did not continue {frame.parent}'s atoms")
                continue
            start = random_cell(sampling_cells, np.random.default_rng([config.seed, g, k]))
            if sorted(start.numbers.tolist()) != sorted(atoms.numbers.tolist()):
                out.append(f"{where}: its trajectory did not start from the random cell its seed draws")
        else:
            out.append(f"{where}: source {source!r} is neither a random cell nor a sampled frame")
    return out
