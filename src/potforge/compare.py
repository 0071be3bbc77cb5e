"""The paper's architecture comparison (section I: "Performance of ANI and HIP-NN was
comparable, demonstrating that the key enabler of an ML potential is the quality of the
training data").

For a campaign directory:

1. train an ANI and a HIP-NN ensemble on the campaign's dataset (the frames labelled by its
   oracle; its train/val splits), each with the campaign's training settings (the architecture
   swapped; budgets overridable), in ``DIR/compare/<arch>/`` — resumable from their checkpoints;
2. evaluate both on the AL test set (the dataset's test split): energy and force MAE/RMSE of the
   ensemble mean;
3. run the static validation benchmarks (quick protocol by default) of each model against the
   campaign's oracle, the reference calculations shared between the two;
4. write ``DIR/compare/compare.json`` and ``compare.md`` with both side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from potforge import durable
from potforge.errors import DataError

ARCHITECTURES = ("ani", "hipnn")
ERROR_KEYS = (
    ("energy_mae_meV_per_atom", "energy MAE", "meV/atom", 2),
    ("energy_rmse_meV_per_atom", "energy RMSE", "meV/atom", 2),
    ("force_mae_eV_per_A", "force MAE", "eV/Å", 3),
    ("force_rmse_eV_per_A", "force RMSE", "eV/Å", 3),
)


@dataclass
class Comparison:
    """errors[arch] = ensemble errors on the AL test set; validation[arch] = rows
    (benchmark title, property, model value, reference value, unit, decimals) of its static
    validation summary; training[arch] = epochs, wall time and the settings used."""

    errors: dict[str, dict[str, float]]
    #: uncertainty[arch][measure] = {"q50", "q90": quantiles over the AL test frames, "spearman":
    #: rank correlation with the true error} — what thresholds calibrated for each architecture rest on
    uncertainty: dict[str, dict[str, dict]] = field(default_factory=dict)
    validation: dict[str, list[list]] = field(default_factory=dict)
    training: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"errors": self.errors, "uncertainty": self.uncertainty, "validation": self.validation,
                "training": self.training, "counts": self.counts}  # fmt: skip


def _fmt(v, decimals: int) -> str:
    return "—" if v is None else f"{v:.{decimals}f}"


def error_rows(res: Comparison) -> list[list[str]]:
    """[quantity, unit, ANI, HIP-NN] for the held-out errors."""
    return [
        [name, unit, *(_fmt(res.errors[a].get(key), d) for a in ARCHITECTURES)] for key, name, unit, d in ERROR_KEYS
    ]


UNCERTAINTY = (
    ("energy_eV_per_sqrt_atom", "ρ = σ_E/√N", "eV/√atom", 4),
    ("force_mean_eV_per_A", "mean force spread", "eV/Å", 3),
    ("force_max_eV_per_A", "max force spread", "eV/Å", 3),
)


def uncertainty_rows(res: Comparison) -> list[list[str]]:
    """[measure, unit, ANI median / 90 % quantile (Spearman), HIP-NN ...] on the AL test frames."""
    rows = []
    for key, name, unit, d in UNCERTAINTY:
        cells = []
        for a in ARCHITECTURES:
            u = res.uncertainty.get(a, {}).get(key)
            if not u:
                cells.append("—")
                continue
            rho = "—" if u.get("spearman") is None else f"{u['spearman']:.2f}"
            cells.append(f"{u['q50']:.{d}f} / {u['q90']:.{d}f} (ρ_s {rho})")
        rows.append([name, unit, *cells])
    return rows


def validation_rows(res: Comparison) -> list[list[str]]:
    """[benchmark, property, unit, reference, ANI (error), HIP-NN (error)] for every property
    that both validations report."""
    if not res.validation:
        return []
    by_arch = {a: {(r[0], r[1]): r for r in res.validation.get(a, [])} for a in ARCHITECTURES}
    rows = []
    for key, first in by_arch[ARCHITECTURES[0]].items():
        title, prop, _, ref, unit, d = first
        cells = []
        for a in ARCHITECTURES:
            r = by_arch[a].get(key)
            model = None if r is None else r[2]
            err = None if model is None or ref is None else model - ref
            cells.append("—" if model is None else f"{model:.{d}f} ({'—' if err is None else f'{err:+.{d}f}'})")
        rows.append([title, prop, unit, _fmt(ref, d), *cells])
    return rows


def render_markdown(res: Comparison) -> str:
    lines = ["# ANI vs HIP-NN on the campaign's dataset", ""]
    lines += [f"Frames: train {res.counts.get('train', 0)}, val {res.counts.get('val', 0)}, "
              f"test (AL test set) {res.counts.get('test', 0)}.", ""]  # fmt: skip
    lines += ["## Held-out errors of the ensemble mean (AL test set)", "", "| quantity | unit | ANI | HIP-NN |",
              "|---|---|---:|---:|"]  # fmt: skip
    lines += [f"| {' | '.join(r)} |" for r in error_rows(res)]
    if res.uncertainty:
        lines += ["", "## Ensemble uncertainty on the AL test frames: median / 90 % quantile (Spearman ρ_s with the "
                  "true error)", "", "| measure | unit | ANI | HIP-NN |", "|---|---|---:|---:|"]  # fmt: skip
        lines += [f"| {' | '.join(r)} |" for r in uncertainty_rows(res)]
    vrows = validation_rows(res)
    if vrows:
        lines += ["", "## Static validation against the campaign's oracle (model value, error = model − reference)", ""]
        lines += ["| benchmark | property | unit | reference | ANI | HIP-NN |", "|---|---|---|---:|---:|---:|"]
        lines += [f"| {' | '.join(r)} |" for r in vrows]
    lines += ["", "## Training", ""]
    for a in ARCHITECTURES:
        t = res.training.get(a, {})
        lines.append(f"- {a}: {t.get('epochs', '?')} epochs, {t.get('walltime_s', 0):.0f} s, model {t.get('model')}")
    return "\n".join(lines) + "\n"


def run_comparison(
    campaign_dir: str | Path,
    *,
    train_overrides: dict[str, Any] | None = None,
    hipnn: dict[str, Any] | None = None,
    validate: bool = True,
    quick: bool = True,
    architectures: tuple[str, ...] = ARCHITECTURES,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> Comparison:
    """Run (or resume) the comparison; see the module docstring. ``train_overrides``: training
    settings for both (e.g. ``max_epochs``); ``hipnn``: HIP-NN network settings.
    ``progress(stage, done, total)`` with stages ``train <arch>`` (epochs) and ``validate <arch>``."""
    import torch

    from potforge.oracle import get_oracle
    from potforge.table1 import load_campaign
    from potforge.train import dataset_elements, load_split, train_ensemble

    directory = Path(campaign_dir)
    show = progress or (lambda stage, done, total: None)
    cfg, store, _ = load_campaign(directory)
    oracle = get_oracle(cfg.oracle.name, cfg.oracle.settings)
    oracle_hash = oracle.settings_hash()
    out = directory / "compare"
    out.mkdir(parents=True, exist_ok=True)
    elements = dataset_elements(store, oracle_hash)
    splits = {s: load_split(store, s, elements, oracle_hash=oracle_hash) for s in ("train", "val", "test")}
    if len(splits["train"]) == 0:
        raise DataError(f"campaign dataset {store.name} has no labelled training frames")
    if len(splits["test"]) == 0:
        raise DataError(f"campaign dataset {store.name} has no labelled test frames (the AL test set)")
    res = Comparison(errors={}, counts={s: len(f) for s, f in splits.items()})
    models: dict[str, Path] = {}
    for arch in architectures:
        update: dict[str, Any] = {"architecture": arch, **(train_overrides or {})}
        if arch == "hipnn":
            update["standardize_inputs"] = False  # an ANI-only reparametrisation
            if hipnn:
                update["hipnn"] = {**cfg.training.hipnn.model_dump(), **hipnn}
        tc = type(cfg.training).model_validate({**cfg.training.model_dump(), **update})
        result = train_ensemble(
            splits["train"], splits["val"], splits["test"], out / arch, tc,
            progress=lambda r, arch=arch, tc=tc: show(f"train {arch}", r["epoch"], tc.max_epochs),
        )  # fmt: skip
        models[arch] = result.model_path
        res.errors[arch] = result.metrics["test"]["ensemble"]
        calibration = result.metrics["test"].get("calibration", {})
        res.uncertainty[arch] = {
            k: {"q50": c["quantiles"]["0.5"], "q90": c["quantiles"]["0.9"], "spearman": c["spearman"]}
            for k, c in calibration.items()
        }
        res.training[arch] = {"epochs": result.epochs, "walltime_s": result.walltime_s, "model": str(result.model_path),
                              "settings": tc.model_dump(mode="json")}  # fmt: skip
    if validate:
        from potforge.validate import ValidationSettings, run_validation
        from potforge.validate.core import reference_evaluator

        settings = ValidationSettings.quick() if quick else ValidationSettings()
        # one reference side for both: its calculations are cached once
        reference = reference_evaluator(cfg.oracle.name, workdir=out / "reference", settings=cfg.oracle.settings)
        for arch, path in models.items():
            chosen: list = []

            def step(event, bench, index, total, arch=arch, chosen=chosen):
                if event == "done":
                    show(f"validate {arch}", index + 1, total)

            report = run_validation(str(path), reference, out / f"validate-{arch}", settings=settings,
                                    dtype=torch.float64, progress=step)  # fmt: skip
            res.validation[arch] = [
                [r.title, row.property, row.model, row.reference, row.unit, row.decimals]
                for r in report.results
                for row in r.summary
            ]
    durable.write_json(out / "compare.json", res.to_dict(), indent=1)
    durable.write_text(out / "compare.md", render_markdown(res))
    return res
