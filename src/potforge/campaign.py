"""The active-learning campaign (paper II.B, Fig. 1), as one loop of named, resumable stages:

    initial random cells --> label --> train --> sample --> queue flagged frames --+
                               ^                                                    |
                               +---------------- next generation <-----------------+

Everything lives in the campaign directory: ``config.yaml`` (with versions and seeds), the
dataset (``campaign.db``), ``campaign.json`` (which stages are done), and one directory per
generation with its model and sampling results. Each stage is idempotent and recorded when
done, so ``potforge run`` on an existing campaign continues where it stopped, and no oracle
result is lost or computed twice whatever killed the previous run.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from potforge import durable
from potforge.campaign_sampling import (
    FrameStream,
    StageFailed,  # noqa: F401 (re-exported: a dead worker's one-line error)
    legacy_sampling,
    queue_frame,
    run_sampling,
    sampling_workers,
    stage_failure,
)
from potforge.census import dataset_census, generation_census
from potforge.config import CampaignConfig
from potforge.data import DatasetStore, Provenance
from potforge.data.plausibility import apply_policy
from potforge.data.store import redact
from potforge.engine import Engine
from potforge.errors import ConfigError
from potforge.labeling import StreamingLabeller, label_pending
from potforge.oracle import get_oracle
from potforge.properties import learning_curve_point
from potforge.records import FlaggedFrame, SampleSummary
from potforge.sample.survival import survival_at
from potforge.stages import sample_stage, train_stage
from potforge.structures import random_cells
from potforge.train.config import with_legacy_values

STATE_FILE = "campaign.json"


@dataclass
class CampaignState:
    """What has been done. ``done`` lists stage names like ``g003:train``."""

    generation: int = 0
    done: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    finished: bool = False
    stop_reason: str = ""
    walltime_s: float = 0.0  # spent in run_campaign, all runs together

    @property
    def closing(self) -> bool:
        """The stop rule fired but the campaign has not finished: the current generation labels
        the last sampling's frames and trains the final model, then the campaign ends."""
        return bool(self.stop_reason) and not self.finished

    @classmethod
    def load(cls, directory: Path) -> CampaignState:
        recorded = durable.read_json(directory / STATE_FILE)
        return cls(**recorded) if recorded else cls()

    def save(self, directory: Path) -> None:
        durable.write_json(directory / STATE_FILE, asdict(self))


def generation_dir(directory: Path, g: int) -> Path:
    return directory / "generations" / f"g{g:03d}"


def model_path(directory: Path, g: int) -> Path:
    return generation_dir(directory, g) / "model" / "model.pt"


def dataset_target(config: CampaignConfig, directory: Path) -> str:
    return config.dataset or str(directory / "campaign.db")


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("potforge", "torch", "ase", "numpy", "parsl", "vesin", "gpaw"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


#: Settings that say where or how a stage runs, not what it computes: a campaign started on a
#: laptop may go on on a GPU node, with more sampling workers, with or without streaming labels.
_PLACEMENT = (("training", "device"), ("training", "member_chunk"), ("sampler", "device"), ("sampler", "workers"),
              ("loop", "streaming_labels"))  # fmt: skip


def _comparable(recorded: dict | None) -> dict:
    """A recorded config as the current schema reads it (defaults filled in), placement dropped."""
    recorded = dict(recorded or {})
    if isinstance(recorded.get("training"), dict):
        recorded["training"] = with_legacy_values(recorded["training"])
    try:
        recorded = CampaignConfig.model_validate(recorded).model_dump(mode="json")
    except ValidationError:
        pass  # written by another version: compared as written
    for section, key in _PLACEMENT:
        if isinstance(recorded.get(section), dict):
            recorded[section] = {k: v for k, v in recorded[section].items() if k != key}
    return recorded


def prepare_directory(config: CampaignConfig, directory: Path) -> None:
    """Create the campaign directory and record its config, versions and seeds; refuse to
    continue an existing campaign with a different configuration."""
    directory.mkdir(parents=True, exist_ok=True)
    saved = directory / "config.yaml"
    current = config.model_dump(mode="json")
    if current.get("dataset"):  # a password in a PostgreSQL URL is never written down
        current["dataset"] = redact(current["dataset"])
    if saved.exists():
        previous = _comparable(yaml.safe_load(saved.read_text()).get("config"))
        now = _comparable(current)
        if previous != now:
            changed = sorted(k for k in set(previous) | set(now) if previous.get(k) != now.get(k))
            raise ConfigError(
                f"{directory} is a campaign with another configuration (differs in: {', '.join(changed)}); "
                "use a new directory, or restore the original config"
            )
        return
    record = {
        "config": current,
        "versions": _versions(),
        "seed": config.seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    durable.write_text(saved, yaml.safe_dump(record, sort_keys=False))


def flagged_frames(sampling_dir: Path) -> list[FlaggedFrame]:
    """The frames a finished sampling stage hands to the oracle: those its summary lists (in
    trajectory-id order), or every stored one for a summary written before that list existed."""
    summary = SampleSummary.read(sampling_dir / "summary.json")
    flagged = sampling_dir / "flagged"
    if summary.flagged_trajectories is None:
        paths = sorted(flagged.glob("*.json"))
    else:
        paths = [flagged / f"{traj}.json" for traj in summary.flagged_trajectories]
    return [FlaggedFrame.read(p) for p in paths]


def ingest_flagged(store: DatasetStore, sampling_dir: Path, oracle_name: str, oracle_hash: str) -> int:
    """Queue the frames the sampler flagged as pending rows (identical frames, and frames
    already queued while sampling ran, are skipped)."""
    return sum(queue_frame(store, rec, oracle_name, oracle_hash) for rec in flagged_frames(sampling_dir))


def continuation_starts(directory: Path, g: int) -> list[str]:
    """The flagged (not unstable) frames of generation g − 1, in trajectory-id order, whose labels
    generation g trained on: where generation g's continued trajectories pick up."""
    if g == 0:
        return []
    sampling = generation_dir(directory, g - 1) / "sampling"
    return [str(sampling / "flagged" / f"{f.traj}.json") for f in flagged_frames(sampling) if f.outcome == "flagged"]


def training_seed(config: CampaignConfig, generation: int) -> int:
    """Generation g's training seed, from the campaign's seed and ``training.seed``: every
    campaign and generation its own initialisation and batch order, reproducibly."""
    import numpy as np

    state = np.random.SeedSequence([config.seed, config.training.seed, generation]).generate_state(1)
    return int(state[0] % (2**31 - 1))


def held_out_uncertainty(model_dir: Path) -> dict[str, list[float]]:
    """Per-frame uncertainty measures of a trained model on its validation and test frames."""
    done = durable.read_done(model_dir) or {}
    metrics = done.get("metrics") or {}
    out: dict[str, list[float]] = {}
    for split in ("val", "test"):
        for key, values in ((metrics.get(split) or {}).get("per_frame") or {}).items():
            out.setdefault(key, []).extend(values)
    return out


#: generations in a row a campaign may flag at once with a flat held-out error before it says so
STALL_GENERATIONS = 3


def not_learning(config: CampaignConfig, history: list[dict], sample: dict) -> list[str]:
    """A warning when the loop is not learning: for the last :data:`STALL_GENERATIONS`
    generations the trajectories were flagged at their first checks and the held-out force error
    moved by less than 10 %. Typical causes: an oracle whose labels are absurd (see
    ``labeling.plausibility``), thresholds far below what the ensemble can reach, or a time step
    too long for the cells."""
    first_checks = 2 * config.sampler.uncertainty.check_every * config.sampler.timestep_fs
    samples = [r for r in history if r.get("stage", "").endswith(":sample")] + [sample]
    trains = [r for r in history if r.get("stage", "").endswith(":train")]
    if len(samples) < STALL_GENERATIONS or len(trains) < STALL_GENERATIONS:
        return []
    medians = [r.get("median_time_to_flag_fs") for r in samples[-STALL_GENERATIONS:]]
    errors = [(r.get("test") or {}).get("force_rmse_eV_per_A") for r in trains[-STALL_GENERATIONS:]]
    if any(m is None or m > first_checks for m in medians) or any(e is None for e in errors):
        return []
    change = abs(errors[-1] - errors[0]) / max(errors[0], 1e-12)
    if change >= 0.1:
        return []
    return [
        f"not learning: for {STALL_GENERATIONS} generations trajectories were flagged within {first_checks:g} fs "
        f"and the held-out force error stayed at {errors[-1]:.3g} eV/Å ({change:.0%} change); check the oracle's "
        "labels (potforge data info: implausible), the uncertainty thresholds and the time step"
    ]


def learning_curve(config: CampaignConfig) -> bool:
    """Whether every generation's model is validated against the oracle (``validation.learning_curve``)."""
    policy = config.validation.learning_curve
    return policy == "always" or (policy == "auto" and config.oracle.name in ("emt", "eam"))


def sampling_budget_s(config: CampaignConfig, elapsed_s: float) -> float | None:
    """Wall time a generation's sampling may take: ``sampler.max_walltime_s``, and no more than
    what is left of ``loop.max_walltime_s`` after ``elapsed_s`` (so the campaign's budget bounds
    the campaign, not only the start of a generation), but at least a tenth of that budget, so a
    generation that starts late still samples. Trajectories the budget cuts are censored."""
    own, total = config.sampler.max_walltime_s, config.loop.max_walltime_s
    if total is None:
        return own
    left = max(total - elapsed_s, 0.1 * total)
    return left if own is None else min(own, left)


def converged(config: CampaignConfig, sampling_dir: Path) -> tuple[bool, float | None]:
    """Whether a generation's trajectories met the stop rule: the Kaplan–Meier survival at
    ``loop.target_median_time_to_flag_fs`` is at least ``loop.target_survival_fraction`` (one
    half: the median rule; censored trajectories count only as far as they ran). Returns the
    rule's verdict and that survival."""
    summary = SampleSummary.read(sampling_dir / "summary.json")
    s = survival_at(summary.outcomes, config.loop.target_median_time_to_flag_fs)
    return (s is not None and s >= config.loop.target_survival_fraction), s


Progress = Callable[[dict], None]


def run_campaign(config: CampaignConfig, directory: str | Path, progress: Progress | None = None) -> CampaignState:
    """Run (or continue) the campaign in ``directory``; returns its final state."""
    directory = Path(directory)
    prepare_directory(config, directory)
    state = CampaignState.load(directory)
    if state.finished:
        return state
    show = progress or (lambda event: None)
    oracle = get_oracle(config.oracle.name, config.oracle.settings)
    oracle.check()
    store = DatasetStore(dataset_target(config, directory))
    store.adopt_labels(oracle.settings_hash(), oracle.legacy_hashes())  # datasets from before identity hashes

    clock = [time.time()]

    def done(stage: str, summary: dict | None = None) -> None:
        now = time.time()
        spent_s = now - clock[0]
        state.walltime_s += spent_s
        clock[0] = now
        state.done.append(stage)
        if summary is not None:
            state.history.append({"stage": stage, **summary, "wall_s": round(spent_s, 1)})
        state.save(directory)

    with Engine(config.engine, run_dir=directory / "parsl") as engine:
        # --- initial random cells (paper II.B.1: ~400) ---------------------------------------
        if "init" not in state.done:
            with store.db:
                for k, atoms in enumerate(random_cells(config.initial.cells, config.initial.n_cells, config.seed)):
                    prov = Provenance(source="random", trajectory=f"random:{config.seed}:{k}")
                    store.add_pending(atoms, prov, oracle.name, oracle.settings_hash())
            done("init")
        while True:
            g = state.generation
            gdir = generation_dir(directory, g)
            # --- label every pending frame -----------------------------------------------------
            if f"g{g:03d}:label" not in state.done:
                show({"stage": "label", "generation": g})
                report = label_pending(
                    store,
                    oracle,
                    engine,
                    directory / "work",
                    chunk_size=config.labeling.chunk_size,
                    timeout_s=config.labeling.timeout_s,
                    max_attempts=config.labeling.max_attempts,
                    progress=lambda d, t, g=g: show({"stage": "label", "generation": g, "done": d, "total": t}),
                )
                policy = config.labeling.plausibility
                checked = apply_policy(store, oracle.settings_hash(), policy)
                warnings = []
                if checked.fraction > policy.warn_fraction:
                    warnings.append(
                        f"{checked.implausible} of {checked.labels} labels of {oracle.name} are implausible "
                        f"(labeling.plausibility); they are kept but not trained on: check the oracle's settings"
                    )
                    show({"stage": "warning", "generation": g, "message": warnings[-1]})
                census = dataset_census(store, oracle.settings_hash(), directory / "census_cache.json")
                done(f"g{g:03d}:label", {"labelled": report.labelled, "quarantined": report.quarantined,
                                         "implausible": checked.implausible,
                                         "dataset_size": store.count(status="ok", oracle_hash=oracle.settings_hash()),
                                         "oracle_calls": store.oracle_calls(oracle.settings_hash()),
                                         "warnings": warnings, **census})  # fmt: skip
            # --- train generation g (warm start from g-1) --------------------------------------
            if f"g{g:03d}:train" not in state.done:
                update: dict = {"seed": training_seed(config, g)}
                if state.closing and config.loop.final_max_epochs:
                    update["max_epochs"] = config.loop.final_max_epochs
                elif g > 0 and config.loop.later_max_epochs:
                    update["max_epochs"] = config.loop.later_max_epochs
                train_cfg = config.training.model_copy(update=update)
                init = str(model_path(directory, g - 1)) if g > 0 and config.loop.warm_start else None
                show({"stage": "train", "generation": g})
                future = engine.submit(
                    "gpu", train_stage, dataset_target(config, directory), str(gdir / "model"),
                    train_cfg.model_dump_json(), init, config.training.threads, oracle.settings_hash(),
                )  # fmt: skip
                summary = _wait(
                    future,
                    gdir / "model" / "status.json",
                    lambda s, g=g: show({"stage": "train", "generation": g, **s}),
                )
                test = summary["metrics"].get("test", {}).get("ensemble", {})
                done(f"g{g:03d}:train", {"epochs": summary["epochs"], "n_train": summary["n_train"], "test": test})
            # --- the property learning curve: generation g's model against the oracle -----------
            if learning_curve(config) and f"g{g:03d}:properties" not in state.done:
                show({"stage": "properties", "generation": g})
                point = learning_curve_point(
                    model_path(directory, g), oracle, gdir / "properties", directory / "properties_reference",
                    generation=g, oracle_calls=store.oracle_calls(oracle.settings_hash()),
                )  # fmt: skip
                done(f"g{g:03d}:properties", point.model_dump(mode="json"))
            if state.closing:  # the closing generation: its model is the campaign's final one
                return _finish(state, directory, show, g)
            # --- sample with model g -----------------------------------------------------------
            if f"g{g:03d}:sample" not in state.done:
                cells = config.loop.sampling_cells or config.initial.cells
                elapsed_s = state.walltime_s + time.time() - clock[0]
                sampler = config.sampler.model_copy(
                    update={
                        "uncertainty": config.sampler.uncertainty.calibrated(held_out_uncertainty(gdir / "model")),
                        "max_walltime_s": sampling_budget_s(config, elapsed_s),
                    }
                )
                show({"stage": "sample", "generation": g})
                starts = continuation_starts(directory, g) if config.sampler.continue_fraction > 0 else []
                summary = _sample(config, directory, g, sampler, cells.model_dump_json(), starts, engine, store,
                                  oracle, show)  # fmt: skip
                keys = ("flagged", "trajectories", "censored", "total_steps", "median_time_to_flag_fs",
                        "survival_at_target", "stop_reason")  # fmt: skip
                census = generation_census(gdir / "sampling").model_dump(mode="json")
                u = sampler.uncertainty
                thresholds = {k: getattr(u, k) for k in ("energy_eV_per_sqrt_atom", "force_mean_eV_per_A",
                                                         "force_max_eV_per_A")}  # fmt: skip
                warnings = not_learning(config, state.history, summary)
                for message in warnings:
                    show({"stage": "warning", "generation": g, "message": message})
                while_sampling = {  # frames of this generation queued and labelled while it sampled
                    "queued_while_sampling": store.count(source="active_learning", generation=g + 1,
                                                         oracle_hash=oracle.settings_hash()),
                    "labelled_while_sampling": store.count(status="ok", source="active_learning", generation=g + 1,
                                                           oracle_hash=oracle.settings_hash()),
                }  # fmt: skip
                done(f"g{g:03d}:sample", {**{k: summary.get(k) for k in keys}, "census": census,
                                          "thresholds": thresholds, "warnings": warnings,
                                          "workers": summary.get("workers", 1), **while_sampling})  # fmt: skip
            # --- queue the flagged frames for labelling -----------------------------------------
            if f"g{g:03d}:queue" not in state.done:
                queued = ingest_flagged(store, gdir / "sampling", oracle.name, oracle.settings_hash())
                done(f"g{g:03d}:queue", {"queued": queued})
            # --- stop? ---------------------------------------------------------------------------
            done_sampling, survival = converged(config, gdir / "sampling")
            if done_sampling:
                target = config.loop.target_median_time_to_flag_fs
                state.stop_reason = (
                    f"{survival:.0%} of trajectories ran {target:.0f} fs unflagged (Kaplan–Meier): converged"
                )
            elif g + 1 >= config.loop.max_generations:
                state.stop_reason = f"generation cap ({config.loop.max_generations}) reached"
            elif config.loop.max_walltime_s is not None and state.walltime_s >= config.loop.max_walltime_s:
                state.stop_reason = f"wall-time budget ({config.loop.max_walltime_s:g} s) reached"
            if state.stop_reason:
                oracle_hash = oracle.settings_hash()
                unlabelled = store.count(status="pending", oracle_hash=oracle_hash)
                # streamed labels: this generation's frames may be labelled already, not yet trained on
                fresh = store.count(source="active_learning", generation=g + 1, oracle_hash=oracle_hash)
                if config.loop.final_training and (unlabelled or fresh):
                    # the last generation's flagged frames were paid for in sampling: label them and
                    # train the final model on them too, rather than leave them pending
                    state.stop_reason += "; the final model is trained on the last generation's frames"
                else:
                    return _finish(state, directory, show, g)
            state.generation = g + 1
            state.save(directory)


def _sample(config: CampaignConfig, directory: Path, g: int, sampler, cells_json: str, starts: list[str],
            engine: Engine, store: DatasetStore, oracle, show: Progress) -> dict:  # fmt: skip
    """Generation g's sampling over its workers, its certain frames labelled meanwhile when
    ``loop.streaming_labels`` (not for the last generation when no final training would use them)."""
    sdir = generation_dir(directory, g) / "sampling"
    report = lambda s: show({"stage": "sample", "generation": g, **s})  # noqa: E731
    args = (str(model_path(directory, g)), str(sdir))
    target = config.loop.target_median_time_to_flag_fs
    if legacy_sampling(sdir):  # started in place by an earlier potforge: finished the same way
        future = engine.submit("gpu", sample_stage, *args, sampler.model_dump_json(), cells_json, config.seed, g,
                               config.sampler.threads, target, starts)  # fmt: skip
        return _wait(future, sdir / "status.json", report)
    workers = sampling_workers(config, sdir)
    stream = labeller = None
    last = g + 1 >= config.loop.max_generations
    if config.loop.streaming_labels and (config.loop.final_training or not last):
        stream = FrameStream(store, sdir, workers, sampler.max_flagged, sampler.max_trajectories, g, oracle.name,
                             oracle.settings_hash())  # fmt: skip
        lab = config.labeling
        labeller = StreamingLabeller(store, oracle, engine, directory / "work", chunk_size=lab.chunk_size,
                                     timeout_s=lab.timeout_s, max_attempts=lab.max_attempts)  # fmt: skip
    return run_sampling(engine, sdir, *args[:1], sampler, cells_json, config.seed, g, config.sampler.threads, target,
                        starts, workers, report, stream, labeller)  # fmt: skip


def _finish(state: CampaignState, directory: Path, show: Progress, g: int) -> CampaignState:
    state.finished = True
    state.save(directory)
    show({"stage": "finished", "generation": g, "reason": state.stop_reason})
    return state


def _wait(future, status_file: Path, report: Callable[[dict], None], poll_s: float = 1.0) -> dict:
    """Wait for a stage's future, relaying the status file the stage keeps up to date. A worker
    that died becomes a one-line :class:`StageFailed`; the stage's own errors pass unchanged."""
    last = None
    while not future.done():
        time.sleep(poll_s)
        try:
            mtime = status_file.stat().st_mtime
            if mtime != last:
                last = mtime
                status = durable.read_json(status_file)
                if status is not None:
                    report(status)
        except OSError:
            pass
    try:
        return future.result()
    except Exception as exc:
        stage = (
            status_file.parent.relative_to(status_file.parents[2])
            if len(status_file.parents) > 2
            else status_file.parent
        )
        failed = stage_failure(exc, str(stage))
        if failed is not None:
            raise failed from None
        raise


def final_model(directory: str | Path) -> Path | None:
    """The newest trained model of a campaign."""
    state = CampaignState.load(Path(directory))
    trained = [int(s[1:4]) for s in state.done if s.endswith(":train")]
    return model_path(Path(directory), max(trained)) if trained else None
