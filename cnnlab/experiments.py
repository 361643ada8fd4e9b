"""The classic experiments, one command each: ``cnnlab experiment NAME``.

Each experiment is a list of runs that differ in one or two factors (the model, the pixel
permutation), trained with the public API and turned into an answer:

    result = run_experiment("permuted-pixels", epochs=5)
    print(result.finding)        # "Permuting the pixels cost the CNN 7.2 points ..."

writes ``<runs_dir>/<experiment>-<time>/``: every run it trained (ordinary runs: ``cnnlab
compare``, ``plot`` and ``eval`` read them), ``results.csv`` (one row per run: the factors,
params, MACs, best and final accuracy, final train loss and train error, seconds per epoch),
the figures, ``report.md`` and ``experiment.json`` (what was asked, for ``resume``).

Writing your own is the same three steps the code below takes for every experiment:

    1. ``cnnlab.train(TrainConfig(model=..., runs_dir=folder, name=...))`` for each variant;
    2. ``cnnlab.compare_runs(paths)`` for params, MACs, accuracies and losses in one table;
    3. ``cnnlab.plot_runs(paths, ...)`` (or matplotlib on ``run.metrics.rows()``).

Ctrl-C keeps every finished run and every finished epoch of the run in progress; the same
experiment continues with ``resume_experiment(folder)`` (``--resume DIR``): finished runs are
kept, the interrupted one continues with ``cnnlab.resume``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import cnnlab
from cnnlab.config import TrainConfig, flag_name
from cnnlab.errors import TrainingInterrupted, UsageError
from cnnlab.runs import Run, atomic_write_text, name_taken, usable_runs_dir

PERMUTATION_SEED = 0  # any fixed seed: one permutation, the same for every run that uses one
DEFAULT_DEPTHS = (20, 56)
CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # the depths that have a resnet<N> and plain<N>
PLAN_FILE, RESULTS_FILE, REPORT_FILE = "experiment.json", "results.csv", "report.md"


@dataclass(frozen=True)
class Variant:
    """One run of an experiment (before seeds): its label, the factors it sets, the train options."""

    label: str
    factors: dict
    options: dict


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str  # what --list shows and report.md opens with
    factors: tuple[str, ...]  # the columns that say what each run varied
    defaults: dict  # train options the experiment sets unless the user gives them
    variants: Callable[["Plan"], list[Variant]]
    figures: Callable[[list, object, Path], list[Path]]  # (results rows, compare_runs table, folder) -> files
    finding: Callable[[list[dict]], str]  # mean rows -> one or two sentences with the numbers


@dataclass
class Plan:
    """What was asked: saved as experiment.json, so --resume repeats it exactly."""

    experiment: str
    data: str = "digits"
    epochs: int = 5
    seeds: int = 1
    depths: list[int] | None = None
    options: dict = field(default_factory=dict)  # other train options, given by the user


@dataclass
class ExperimentResult:
    path: Path
    rows: list[dict]  # results.csv: one per run
    means: list[dict]  # one per variant: means (and spreads over seeds)
    finding: str
    files: list[Path]


# -- the experiments ------------------------------------------------------------------------------

def permuted_variants(plan: Plan) -> list[Variant]:
    return [Variant(f"{kind}-{'permuted' if permuted else 'original'}",
                    dict(net=kind, permuted=permuted),
                    dict(model=model, permute_pixels=PERMUTATION_SEED if permuted else None))
            for kind, model in (("cnn", "small_cnn"), ("mlp", "small_mlp")) for permuted in (False, True)]


def permuted_finding(means: list[dict]) -> str:
    acc = {(row["net"], row["permuted"]): row["final_val_acc"] for row in means}
    cost = {net: 100 * (acc[net, False] - acc[net, True]) for net in ("cnn", "mlp")}
    return (f"Permuting the pixels cost the CNN {cost['cnn']:.1f} points of test accuracy "
            f"({acc['cnn', False]:.3f} -> {acc['cnn', True]:.3f}) and the MLP {cost['mlp']:.1f} "
            f"({acc['mlp', False]:.3f} -> {acc['mlp', True]:.3f}).")


def depth_variants(plan: Plan) -> list[Variant]:
    return [Variant(f"{kind}{depth}", dict(depth=depth, shortcuts=kind == "resnet"), dict(model=f"{kind}{depth}"))
            for depth in plan.depths or DEFAULT_DEPTHS for kind in ("plain", "resnet")]


def depth_finding(means: list[dict]) -> str:
    error = {(row["depth"], row["shortcuts"]): row["final_train_error"] for row in means}
    depths = sorted({depth for depth, _ in error})
    shallow, deep = depths[0], depths[-1]
    plain_gap = 100 * (error[deep, False] - error[shallow, False])
    residual_gap = 100 * (error[deep, True] - error[shallow, True])
    verdict = ("the deeper plain net trains worse (the degradation of He et al.)" if plain_gap > 0
               else "no degradation shows here")
    return (f"Final training error, plain {shallow} -> {deep} layers: {error[shallow, False]:.3f} -> "
            f"{error[deep, False]:.3f} ({plain_gap:+.1f} points); with shortcuts: {error[shallow, True]:.3f} -> "
            f"{error[deep, True]:.3f} ({residual_gap:+.1f} points); {verdict}.")


def one_by_one_variants(plan: Plan) -> list[Variant]:
    return [Variant(model, dict(inception=inception), dict(model=model))
            for inception, model in (("reduced", "googlenet"), ("naive", "googlenet_naive"),
                                     ("factorised-5x5", "googlenet_factorised"))]


def one_by_one_finding(means: list[dict]) -> str:
    by = {row["inception"]: row for row in means}
    reduced, naive = by["reduced"], by["naive"]
    return (f"Without the 1x1 reductions GoogLeNet has {naive['params'] / reduced['params']:.1f}x the parameters "
            f"({naive['params']:,} vs {reduced['params']:,}) and {naive['macs'] / reduced['macs']:.1f}x the MACs, "
            f"takes {naive['mean_epoch_seconds'] / reduced['mean_epoch_seconds']:.1f}x the time per epoch, "
            f"and reaches {naive['best_val_acc']:.3f} against {reduced['best_val_acc']:.3f}.")


ATTENTION_MODELS = {"none": "resnet18", "se": "se_resnet18", "cbam": "cbam_resnet18", "eca": "eca_resnet18"}


def attention_variants(plan: Plan) -> list[Variant]:
    return [Variant(model, dict(attention=attention), dict(model=model))
            for attention, model in ATTENTION_MODELS.items()]


def attention_finding(means: list[dict]) -> str:
    base = next(row for row in means if row["attention"] == "none")
    parts = [f"{row['attention'].upper()} {row['best_val_acc']:.3f} ({row['params'] - base['params']:+,} params)"
             for row in means if row["attention"] != "none"]
    return f"Best test accuracy on ResNet-18: none {base['best_val_acc']:.3f}; " + ", ".join(parts) + "."


def curves_figure(results: list, table, folder: Path) -> list[Path]:
    """Every run's training and test curves (the public plot_runs)."""
    return [cnnlab.plot_runs([row["path"] for row in results], folder / "curves.png", lr=False,
                             title=folder.name, on_problem=lambda message: None)]


def efficiency_figure(results: list, table, folder: Path) -> list[Path]:
    from cnnlab.plots import plot_efficiency

    return [*curves_figure(results, table, folder), plot_efficiency(table, folder / "efficiency.png")]


def training_error_figure(results: list, table, folder: Path) -> list[Path]:
    """He et al. Fig. 1/6: training error over epochs, plain nets dashed, residual nets solid,
    one colour per depth (the mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from cnnlab.plots import run_colour

    depths = sorted({row["depth"] for row in results})
    figure, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for shortcuts in (False, True):
        for position, depth in enumerate(depths):
            curves = [[1 - m["train_acc"] for m in Run(row["path"]).metrics.rows()]
                      for row in results if row["depth"] == depth and row["shortcuts"] == shortcuts]
            epochs = min(map(len, curves))
            mean = [sum(curve[i] for curve in curves) / len(curves) for i in range(epochs)]
            ax.plot(range(1, epochs + 1), mean, marker=".", color=run_colour(position),
                    linestyle="-" if shortcuts else "--", label=f"{'resnet' if shortcuts else 'plain'}-{depth}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("training error")
    ax.set_title("plain (dashed) vs residual (solid)")
    ax.grid(alpha=0.3)
    ax.legend()
    out = folder / "training_error.png"
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return [out, *curves_figure(results, table, folder)]


EXPERIMENTS = {e.name: e for e in [
    Experiment("permuted-pixels",
               "A small CNN and an MLP of similar size (~6.2k and ~6.4k parameters, 8x8 input) trained with "
               "and without one fixed shuffle of the pixel positions: the CNN relies on neighbouring pixels, "
               "the MLP does not.",
               ("net", "permuted"), {}, permuted_variants, curves_figure, permuted_finding),
    Experiment("depth",
               "Plain networks against ResNets of the same depth (He et al. 2015, CIFAR nets, 20 and 56 "
               "layers; more with --depths): does the deeper plain net train worse, and do shortcuts fix it?",
               ("depth", "shortcuts"), {}, depth_variants, training_error_figure, depth_finding),
    Experiment("one-by-one",
               "GoogLeNet with its 1x1 reductions, without them (naive Inception) and with the 5x5 "
               "factorised into two 3x3: parameters, MACs, accuracy and time per epoch (input 32x32).",
               ("inception",), {"resize": 32}, one_by_one_variants, efficiency_figure, one_by_one_finding),
    Experiment("attention",
               "ResNet-18 plain, with squeeze-and-excitation, CBAM and ECA attention (input 32x32): what "
               "each adds in parameters and accuracy.",
               ("attention",), {"resize": 32}, attention_variants, efficiency_figure, attention_finding),
]}


def describe_experiments() -> list[dict]:
    return [dict(name=e.name, description=e.description) for e in EXPERIMENTS.values()]


# -- checking what was asked ---------------------------------------------------------------------

def make_plan(name: str, *, data: str = "digits", epochs: int = 5, seeds: int = 1,
              depths: list[int] | None = None, options: dict | None = None) -> Plan:
    """The experiment as asked, checked before anything is written."""
    experiment = find_experiment(name)
    options = dict(options or {})
    known = {f.name for f in fields(TrainConfig)}
    varied = {key for variant in experiment.variants(Plan(name)) for key in variant.options}
    own = {"data", "epochs", "name", "runs_dir"}  # the experiment's own options say these
    for key in options:
        if key not in known:
            raise UsageError(f"{key!r} is not a training option")
        if key in varied or key in own:
            raise UsageError(f"{flag_name(key)} does not apply to the {name} experiment: it sets it for each run")
    if depths is not None and name != "depth":
        raise UsageError(f"--depths applies to the depth experiment, not to {name}")
    for depth in depths or ():
        if depth not in CIFAR_DEPTHS:
            raise UsageError(f"--depths takes {', '.join(map(str, CIFAR_DEPTHS))} (6n+2 CIFAR nets), not {depth}")
    if depths is not None and len(set(depths)) < 2:
        raise UsageError("--depths needs at least two different depths to compare")
    if not 1 <= seeds <= 100:
        raise UsageError(f"--seeds must be between 1 and 100, not {seeds}")
    plan = Plan(name, data, epochs, seeds, sorted(set(depths)) if depths else None, options)
    for config in configs(plan, Path(".")):
        config.validate()  # every run's options, before the first run trains
    return plan


def find_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def configs(plan: Plan, folder: Path) -> list[TrainConfig]:
    """Every run of the plan: each variant once per seed, named <variant>-seed<N>, inside ``folder``."""
    experiment = find_experiment(plan.experiment)
    base_seed = plan.options.get("seed", 0)
    return [TrainConfig(**{**experiment.defaults, **plan.options, **variant.options, "seed": base_seed + i,
                           "data": plan.data, "epochs": plan.epochs, "runs_dir": str(folder),
                           "name": f"{variant.label}-seed{base_seed + i}"})
            for variant in experiment.variants(plan) for i in range(plan.seeds)]


# -- running ---------------------------------------------------------------------------------------

def run_experiment(name: str, *, data: str = "digits", epochs: int = 5, seeds: int = 1,
                   depths: list[int] | None = None, runs_dir="runs", options: dict | None = None,
                   progress: str = "auto") -> ExperimentResult:
    """Run experiment ``name`` in a new folder ``<runs_dir>/<name>-<time>``; ``options``: any
    other TrainConfig options, given to every run."""
    plan = make_plan(name, data=data, epochs=epochs, seeds=seeds, depths=depths, options=options)
    folder = new_folder(Path(runs_dir), name)
    atomic_write_text(folder / PLAN_FILE, json.dumps(plan.__dict__, indent=2) + "\n")
    return carry_out(plan, folder, progress)


def resume_experiment(folder, name: str | None = None, *, progress: str = "auto", **asked) -> ExperimentResult:
    """Continue an interrupted experiment with what it was asked: finished runs are kept, the
    run in progress is resumed, the others are trained. ``name`` and ``asked`` (data, epochs,
    seeds, depths, options), where given, must be what it was started with: the command that
    was interrupted, with --resume DIR added, continues it."""
    folder = Path(folder)
    try:
        saved = json.loads((folder / PLAN_FILE).read_text(encoding="utf-8"))
        plan = make_plan(saved.pop("experiment"), **saved)
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        raise UsageError(f"{str(folder)!r} is not an experiment folder (no readable {PLAN_FILE})") from None
    if name is not None and name != plan.experiment:
        raise UsageError(f"{folder} holds the {plan.experiment} experiment, not {name}")
    started = {**{key: getattr(plan, key) for key in asked if key != "options"}, **plan.options}
    given = {**{key: value for key, value in asked.items() if key != "options"}, **asked.get("options", {})}
    if "depths" in given:
        given["depths"] = sorted(set(given["depths"]))
    changed = [key for key, value in given.items() if started.get(key) != value]
    if changed:
        key = changed[0]
        was = f"{flag_name(key)} {started[key]}" if started.get(key) is not None else f"without {flag_name(key)}"
        raise UsageError(f"{flag_name(key)} {given[key]} is not what {folder} was started with ({was}); "
                         f"--resume continues an experiment as it was asked")
    return carry_out(plan, folder, progress)


def new_folder(runs_dir: Path, name: str) -> Path:
    runs_dir = usable_runs_dir(runs_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 100):
        folder = runs_dir / (f"{name}-{stamp}" if attempt == 1 else f"{name}-{stamp}-{attempt}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise UsageError(f"could not find a free experiment folder name under {runs_dir}")


def carry_out(plan: Plan, folder: Path, progress: str) -> ExperimentResult:
    runs = []
    try:
        for config in configs(plan, folder):
            runs.append(train_or_continue(config, progress))
    except (TrainingInterrupted, KeyboardInterrupt) as stopped:
        code = getattr(stopped, "exit_code", 130)
        error = TrainingInterrupted(f"interrupted; {len(runs)} finished run(s) are kept in {folder} (continue "
                                    f"with: cnnlab experiment {plan.experiment} --resume {folder})")
        error.exit_code = code
        raise error from None
    return report(plan, folder, runs)


def train_or_continue(config: TrainConfig, progress: str) -> Run:
    """A new run; or the run of that name left by an interrupted experiment, finished if needed."""
    path = Path(config.runs_dir) / config.name
    if not name_taken(path):
        return cnnlab.train(config, progress=progress)
    run = Run.open(path)
    if len(run.metrics.rows()) >= config.epochs:
        return run
    return cnnlab.resume(run, epochs=config.epochs, progress=progress)


# -- the answer --------------------------------------------------------------------------------------

MEASURES = ("params", "macs", "best_val_acc", "final_val_acc", "final_train_loss", "final_train_error",
            "mean_epoch_seconds")
SPREAD = ("best_val_acc", "final_val_acc", "final_train_loss", "final_train_error")


def report(plan: Plan, folder: Path, runs: list[Run]) -> ExperimentResult:
    """results.csv, the figures and report.md from the finished runs."""
    from cnnlab.compare import compare_runs
    from cnnlab.render import rows_as

    experiment = find_experiment(plan.experiment)
    table = compare_runs(runs, on_problem=lambda message: None)
    by_path = table.set_index("path")
    variants = [variant for variant in experiment.variants(plan) for _ in range(plan.seeds)]
    rows = []
    for run, variant, config in zip(runs, variants, configs(plan, folder)):
        measured = by_path.loc[str(run.path)]
        last = run.metrics.rows()[-1]
        rows.append({"run": run.name, **variant.factors, "seed": config.seed,
                     "params": int(measured["params"]), "macs": int(measured["macs"]),
                     "best_val_acc": float(measured["best_val_acc"]), "final_val_acc": float(measured["final_val_acc"]),
                     "final_train_loss": float(measured["final_train_loss"]),
                     "final_train_error": 1 - last["train_acc"],
                     "mean_epoch_seconds": float(last["epoch_seconds"] if measured.isna()["mean_epoch_seconds"]
                                                 else measured["mean_epoch_seconds"]),
                     "path": str(run.path)})
    means = mean_rows(rows, experiment.factors)
    finding = experiment.finding(means)
    atomic_write_text(folder / RESULTS_FILE, rows_as([{k: v for k, v in row.items() if k != "path"} for row in rows], "csv"))
    figures = experiment.figures(rows, table, folder)
    atomic_write_text(folder / REPORT_FILE, report_text(plan, experiment, means, finding, figures))
    return ExperimentResult(folder, rows, means, finding, [folder / RESULTS_FILE, *figures, folder / REPORT_FILE])


def mean_rows(rows: list[dict], factors: tuple[str, ...]) -> list[dict]:
    """One row per variant: the mean of each measure over seeds, and the spread (max - min)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[f] for f in factors), []).append(row)
    means = []
    for key, group in groups.items():
        mean = {**dict(zip(factors, key)), "seeds": len(group)}
        for measure in MEASURES:
            values = [row[measure] for row in group]
            mean[measure] = sum(values) / len(values)
            if measure in SPREAD:
                mean[f"{measure}_spread"] = max(values) - min(values)
        mean["params"], mean["macs"] = int(mean["params"]), int(mean["macs"])
        means.append(mean)
    return means


def report_table(means: list[dict], factors: tuple[str, ...]) -> list[dict]:
    """The mean rows as people read them: accuracies as mean ± spread when there are seeds."""
    shown = []
    for row in means:
        line = {f: row[f] for f in factors}
        line["params"], line["MACs"] = row["params"], row["macs"]
        for measure in SPREAD:
            value = f"{row[measure]:.3f}"
            line[measure] = value + (f" ± {row[f'{measure}_spread'] / 2:.3f}" if row["seeds"] > 1 else "")
        line["s/epoch"] = f"{row['mean_epoch_seconds']:.2f}"
        shown.append(line)
    return shown


def report_text(plan: Plan, experiment: Experiment, means: list[dict], finding: str, figures: list[Path]) -> str:
    from cnnlab.render import rows_as

    given = " ".join(f"{flag_name(k)} {v}" for k, v in plan.options.items())
    depths = f" --depths {','.join(map(str, plan.depths))}" if plan.depths else ""
    command = (f"cnnlab experiment {plan.experiment} --data {plan.data} --epochs {plan.epochs} "
               f"--seeds {plan.seeds}{depths} {given}").strip()
    spread = (f"Means of {plan.seeds} seeds; ± is half the range over seeds." if plan.seeds > 1 else "One seed.")
    table = rows_as(report_table(means, experiment.factors), "markdown", right=("params", "MACs"))
    pictures = "".join(f"![{figure.stem}]({figure.name})\n" for figure in figures)
    return (f"# {experiment.name}\n\n{experiment.description}\n\n`{command}`\n\n{spread}\n\n{table}\n"
            f"{finding}\n\n{pictures}")
