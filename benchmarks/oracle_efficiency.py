"""Oracle efficiency of two stop rules for the sampler's trajectories (discovery issue, item 6):
the paper's plain threshold rule (a trajectory is stopped when the ensemble's uncertainty
crosses the fixed thresholds of paper II.B.2) against thresholds calibrated on the model's own
held-out uncertainty (``sampler.uncertainty.relative_quantile``: while the young model is less
certain than the paper's thresholds everywhere, a trajectory is stopped only where it is more
uncertain than 90 % of the held-out frames), each on several seeds.

Each arm runs the same campaign configuration (default ``examples/quickstart.yaml``, the demo)
with a wall-time budget per campaign, every generation's model is then validated against the
campaign's oracle with the **full** static protocol (the validation's own oracle calls are not
labels and are cached once for all models), and the strict gate errors (potforge.properties,
``strict``) are set against the oracle calls (labels) that model was trained on. Printed: one
row per model, then per arm the gates passed and the median gate errors at equal calls; plotted:
``OUT/oracle_efficiency.png``, each gate's |error| / limit against calls, seeds as thin lines.

Everything is resumable: a killed run continues (campaigns resume, validated models are read
back from ``OUT/validation``).

    python benchmarks/oracle_efficiency.py [--config examples/quickstart.yaml] [--seeds 1 2 3]
        [--budget-s 480] [--out runs/oracle_efficiency]
        (the defaults take about an hour on 2 cores; run it on an otherwise idle machine)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

#: arm name -> the sampler.uncertainty.relative_quantile it runs with (None: the paper's rule)
ARMS = {"paper thresholds": None, "calibrated (q = 0.9)": 0.9}


def arm_config(path: Path, quantile: float | None, seed: int, budget_s: float):
    from potforge.config import load_config

    cfg = load_config(path)
    cfg = cfg.model_copy(deep=True)
    cfg.seed = seed
    cfg.sampler.uncertainty.relative_quantile = quantile
    cfg.loop.max_walltime_s = budget_s
    cfg.validation.enabled = False  # every generation's model is validated here instead
    cfg.validation.learning_curve = "never"
    return cfg


def calls_per_generation(directory: Path) -> dict[int, int]:
    """Oracle calls (labels) each generation's model was trained on, from campaign.json."""
    from potforge.campaign import CampaignState

    out = {}
    for row in CampaignState.load(directory).history:
        stage = row.get("stage", "")
        if stage.endswith(":label") and row.get("oracle_calls") is not None:
            out[int(stage[1:4])] = int(row["oracle_calls"])
    return out


def validate_generations(directory: Path, out: Path, oracle, reference_dir: Path) -> list[dict]:
    """Full static validation of every trained generation's model, once; the strict gate errors."""
    from potforge import durable
    from potforge.campaign import CampaignState, model_path
    from potforge.properties import judge, measured
    from potforge.validate import run_validation
    from potforge.validate.core import OracleEvaluator
    from potforge.validate.settings import ValidationSettings

    state = CampaignState.load(directory)
    calls = calls_per_generation(directory)
    reference = OracleEvaluator(oracle, workdir=reference_dir, persist=True)
    rows = []
    for g in sorted(int(s[1:4]) for s in state.done if s.endswith(":train")):
        record = out / f"g{g:03d}.json"
        row = durable.read_json(record)
        if row is None:
            t0 = time.time()
            report = run_validation(str(model_path(directory, g)), reference, out / f"g{g:03d}",
                                    settings=ValidationSettings(), write=False)  # fmt: skip
            gates = [r.model_dump(mode="json") for r in judge(measured(report), "strict")]
            row = {"generation": g, "oracle_calls": calls[g], "gates": gates, "wall_s": time.time() - t0}
            durable.write_json(record, row)
        rows.append(row)
    return rows


def normalised(gate: dict) -> float:
    """|error| / limit (1: at the gate); relative gates against the reference's magnitude."""
    from potforge.properties import GATES

    spec = next(g for g in GATES["strict"] if _label(g.key) == gate["property"])
    if gate["error"] is None:
        return float("nan")
    if spec.kind == "relative":
        return abs(gate["error"]) / (spec.limit * abs(gate["reference"]))
    return abs(gate["error"]) / spec.limit


def _label(key: str) -> str:
    from potforge.properties import LABELS

    return LABELS[key]


def plot(results: dict[str, dict[int, list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    props = [g["property"] for g in next(iter(next(iter(results.values())).values()))[0]["gates"]]
    fig, axes = plt.subplots(3, 4, figsize=(15, 10), sharex=True)
    colours = dict(zip(results, ("tab:blue", "tab:orange", "tab:green"), strict=False))
    for ax, prop in zip(axes.flat, ["gates passed", *props], strict=False):
        for arm, seeds in results.items():
            for k, rows in enumerate(seeds.values()):
                x = [r["oracle_calls"] for r in rows]
                if prop == "gates passed":
                    y = [sum(bool(g["passed"]) for g in r["gates"]) for r in rows]
                else:
                    y = [normalised(next(g for g in r["gates"] if g["property"] == prop)) for r in rows]
                ax.plot(x, y, "o-", ms=3, lw=1, color=colours[arm], alpha=0.8, label=arm if k == 0 else None)
        ax.set_title(prop if prop == "gates passed" else f"{prop}: |error| / gate", fontsize=10)
        if prop != "gates passed":
            ax.set_yscale("log")
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
    for ax in axes.flat[len(props) + 1 :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("oracle calls (labels)")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("strict gates (full static protocol) against labelling calls; below the dashed line = inside")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def at_calls(rows: list[dict], calls: int) -> dict | None:
    """The newest model trained on at most ``calls`` labels."""
    below = [r for r in rows if r["oracle_calls"] <= calls]
    return below[-1] if below else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=Path("examples/quickstart.yaml"))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--budget-s", type=float, default=480.0, help="each campaign's loop.max_walltime_s")
    p.add_argument("--out", type=Path, default=Path("runs/oracle_efficiency"))
    args = p.parse_args()

    from potforge.campaign import run_campaign
    from potforge.oracle import get_oracle

    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[int, list[dict]]] = {}
    for arm, quantile in ARMS.items():
        tag = "paper" if quantile is None else f"q{quantile:g}"
        for seed in args.seeds:
            cfg = arm_config(args.config, quantile, seed, args.budget_s)
            directory = args.out / f"{tag}-s{seed}"
            t0 = time.time()
            state = run_campaign(cfg, directory)
            print(f"{arm}, seed {seed}: {state.generation + 1} generations, {state.stop_reason} "
                  f"({time.time() - t0:.0f} s this run)", flush=True)  # fmt: skip
            oracle = get_oracle(cfg.oracle.name, cfg.oracle.settings)
            rows = validate_generations(directory, args.out / "validation" / f"{tag}-s{seed}", oracle,
                                        args.out / "validation" / "reference")  # fmt: skip
            results.setdefault(arm, {})[seed] = rows

    props = [g["property"] for g in results[next(iter(ARMS))][args.seeds[0]][0]["gates"]]
    header = " ".join(f"{q[:9]:>9s}" for q in props)
    print(f"\n{'arm':24s} {'seed':>4s} {'gen':>3s} {'calls':>5s} {'passed':>6s}  {header}")
    for arm, seeds in results.items():
        for seed, rows in seeds.items():
            for r in rows:
                errs = " ".join(f"{g['error']:9.3g}" if g["error"] is not None else f"{'-':>9s}" for g in r["gates"])
                passed = sum(bool(g["passed"]) for g in r["gates"])
                print(f"{arm:24s} {seed:4d} {r['generation']:3d} {r['oracle_calls']:5d} {passed:6d}  {errs}")
    # equal calls: four levels from the largest initial dataset to the smallest final one
    campaigns = [rows for seeds in results.values() for rows in seeds.values()]
    first, final = max(r[0]["oracle_calls"] for r in campaigns), min(r[-1]["oracle_calls"] for r in campaigns)
    print("\nat equal calls (each seed's newest model trained on at most that many labels; medians over seeds "
          "of |error| / gate limit, 1 = at the gate):")  # fmt: skip
    print(f"{'arm':24s} {'calls':>5s} {'passed':>6s}  {header}")
    for calls in sorted({int(c) for c in np.linspace(first, final, 4)}):
        for arm, seeds in results.items():
            picked = [at_calls(rows, calls) for rows in seeds.values()]
            picked = [r for r in picked if r is not None]
            if not picked:
                continue
            passed = np.median([sum(bool(g["passed"]) for g in r["gates"]) for r in picked])
            med = [np.nanmedian([normalised(r["gates"][i]) for r in picked]) for i in range(len(props))]
            print(f"{arm:24s} {calls:5d} {passed:6.1f}  " + " ".join(f"{m:9.3g}" for m in med))
    plot(results, args.out / "oracle_efficiency.png")
    print(f"\nplot: {args.out / 'oracle_efficiency.png'}")


if __name__ == "__main__":
    main()
