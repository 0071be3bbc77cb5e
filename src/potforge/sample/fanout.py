"""One generation's sampling fanned out over several workers, with the result of one sampler.

Trajectory ids 0, 1, ..., ``max_trajectories`` - 1 are dealt round-robin: worker w of W runs
ids w, w + W, w + 2W, ... in order, each worker a batched :class:`~potforge.sample.Sampler` of
``replicas`` slots with its own directory (``w000/``, ``w001/``: checkpoint, summary, status);
every flagged frame goes to the generation's one ``flagged/`` directory. Round-robin keeps the
workers abreast in the id space, so the ids that survive the ``max_flagged`` cut are spread
over all of them.

``max_flagged`` counts in trajectory-id order over the union of the workers: the cut is the id
j of the ``max_flagged``-th event (flagged or unstable) once trajectories 0..j have all finished,
whichever worker ran them. A worker cannot see that alone, so each publishes the trajectories it
has finished (``exchange/w000.json``: id -> whether it is an event) and reads the others'; it
stops once the shared cut is known and starts no trajectory with ``max_flagged`` known events
below it. Trajectory k draws everything from seed (seed, g, k) and its path does not depend on
which trajectories run beside it, so what the exchange changes is only how much work is wasted
past the cut, never a result: the merged summary (:func:`merge`) lists the same trajectories,
outcomes and flagged frames for any number of workers.

The cost: a worker learns of the others' results only when they publish (after each
checkpoint, at most every :data:`PUBLISH_EVERY_S`), and workers that do not run at the same time
(more workers than slots) cannot stop each other; a worker that runs alone runs its share until
it holds ``max_flagged`` events of its own. Work past the cut is counted in ``total_steps`` and
its trajectories are marked ``unused``; they are never labelled.

An outcome is published only once it is in its worker's checkpoint, so a kill never takes back
a published result: a resumed worker starts from a state that already holds it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from potforge import durable
from potforge.records import SampleSummary, TrajectoryOutcome
from potforge.sample.survival import median_time_to_flag, survival_at

EXCHANGE_DIR = "exchange"
WORKERS_FILE = "workers.json"
#: how often at most a worker publishes its finished trajectories (and checkpoints to do so)
PUBLISH_EVERY_S = 1.0
#: outcomes that are final: what a trajectory that ended on its own did
FINISHED = ("flagged", "unstable", "survived")


def worker_dir(sampling_dir: Path, worker: int) -> Path:
    return Path(sampling_dir) / f"w{worker:03d}"


def worker_ids(worker: int, workers: int, max_trajectories: int) -> list[int]:
    """The trajectory ids worker ``worker`` of ``workers`` runs, in order."""
    return list(range(worker, max_trajectories, workers))


def global_cut(known: dict[int, bool], max_flagged: int, max_trajectories: int) -> int | None:
    """The id j of the ``max_flagged``-th event when trajectories 0..j are all known finished
    (``known``: id -> is an event, finished trajectories only), else None."""
    count = 0
    for k in range(max_trajectories):
        if k not in known:
            return None
        count += known[k]
        if count >= max_flagged:
            return k
    return None


def labelled_prefix(known: dict[int, bool], max_flagged: int, max_trajectories: int) -> list[int]:
    """The events of the longest finished prefix 0..j, at most ``max_flagged`` of them: the
    trajectories whose frames the generation certainly labels (whatever the unfinished ones do,
    these are among the first ``max_flagged`` events in id order), in id order."""
    out: list[int] = []
    for k in range(max_trajectories):
        if k not in known or len(out) >= max_flagged:
            break
        if known[k]:
            out.append(k)
    return out


class Exchange:
    """Workers' finished trajectories, one small JSON file per worker under ``directory``."""

    def __init__(self, directory: str | Path, worker: int, workers: int, read_every_s: float = PUBLISH_EVERY_S):
        self.directory = Path(directory)
        self.worker, self.workers = worker, workers
        self.read_every_s = read_every_s
        self._peers: dict[int, bool] = {}
        self._read_at = -float("inf")

    def path(self, worker: int) -> Path:
        return self.directory / f"w{worker:03d}.json"

    def publish(self, outcomes: Iterable[tuple[int, TrajectoryOutcome]]) -> None:
        durable.write_json(self.path(self.worker), {str(k): o.is_event for k, o in outcomes if o.outcome in FINISHED})

    def peers(self) -> dict[int, bool]:
        """What the other workers have published (re-read at most every ``read_every_s``)."""
        if time.time() - self._read_at >= self.read_every_s:
            self._read_at = time.time()
            self._peers = read_known(self.directory, [w for w in range(self.workers) if w != self.worker])
        return self._peers


def read_known(directory: str | Path, workers: Iterable[int]) -> dict[int, bool]:
    """id -> is an event, for every trajectory the given workers have published as finished."""
    known: dict[int, bool] = {}
    for w in workers:
        published = durable.read_json(Path(directory) / f"w{w:03d}.json") or {}
        known.update({int(k): bool(v) for k, v in published.items()})
    return known


def merge(summaries: list[SampleSummary], max_flagged: int, max_trajectories: int, target_fs: float) -> SampleSummary:
    """The generation's summary from its workers' summaries: outcomes in id order, the cut at
    the ``max_flagged``-th event of the union (later trajectories ``unused``), the flagged frames
    the first ``max_flagged`` events of what is left. For one worker it is that worker's own."""
    by_id: dict[int, TrajectoryOutcome] = {}
    for s in summaries:
        for o in s.outcomes:
            by_id[int(o.traj.rsplit("-t", 1)[1])] = o.model_copy()
    known = {k: o.is_event for k, o in by_id.items() if o.outcome in FINISHED}
    cut = global_cut(known, max_flagged, max_trajectories)
    if cut is not None:
        for k, o in by_id.items():
            if k > cut:
                o.outcome = "unused"
    ordered = [by_id[k] for k in sorted(by_id)]
    used = [o for o in ordered if o.outcome != "unused"]
    flagged = [o.traj for o in used if o.is_event][:max_flagged]
    if cut is not None:
        stop_reason = f"{max_flagged} flagged frames"
    elif any(s.stop_reason == "wall-time budget" for s in summaries):
        stop_reason = "wall-time budget"
    else:
        stop_reason = "every trajectory finished"
    return SampleSummary(
        flagged=len(flagged),
        trajectories=len(used),
        total_steps=sum(s.total_steps for s in summaries),
        walltime_s=max((s.walltime_s for s in summaries), default=0.0),
        stop_reason=stop_reason,
        median_time_to_flag_fs=median_time_to_flag(used),
        survival_at_target=survival_at(used, target_fs),
        max_observed_fs=max((o.time_fs for o in used), default=None),
        censored=sum(o.outcome in ("survived", "running") for o in used),
        flagged_trajectories=flagged,
        outcomes=ordered,
    )
