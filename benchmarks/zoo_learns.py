"""Does every model in the zoo learn with its default recipe? Trains each registered model on
the embedded digits (``cnnlab train MODEL`` with no optimisation flags) at a CPU-practical
size and prints one row per model: input, width, recipe, epochs, seconds, best val_acc.

The size: the model's natural input when a forward pass costs at most --macs multiply-
accumulates there; otherwise the largest side in 32, 48, 64, 96 (at least what the model
accepts) under that budget; otherwise ``width=`` halved until it fits (down to 1/2, and never for
the models in FULL_WIDTH; then the cheapest size at that width). Goal: every model >= 0.95.

    python benchmarks/zoo_learns.py                      # the whole zoo (about two hours of one busy core)
    python benchmarks/zoo_learns.py 'resnet*' 'vgg1?' --out zoo.csv
"""

import argparse
import tempfile
import time

from cnnlab.config import TrainConfig
from cnnlab.errors import InputSizeMismatch, InputTooSmall
from cnnlab.models import list_models, model_spec
from cnnlab.summary import summarize
from cnnlab.training import train
from timing import write_rows  # a sibling script

SIDES = (32, 48, 64, 96)
MIN_WIDTH = 0.5  # at 1/4 the deep nets have 4-channel stages and stop learning (measured: resnet152 0.33)
# never narrowed: at width 1/2 and 32 px resnet152 fits the training digits (0.97-0.99) but reaches only
# 0.92 / 0.88 (seeds 0 / 1), 0.80 at lr 1e-3, 0.93 at lr 4e-3 or in 20 epochs, 0.95 at 48 px; at full
# width 0.96-0.97 (three runs)
FULL_WIDTH = {"resnet152"}


def macs_at(name: str, side: int, width: float | None) -> int | None:
    """MACs of one digit image (one channel) at side x side; None if the model cannot take it."""
    from cnnlab.models import create_model, uninitialized

    try:
        with uninitialized():
            model = create_model(name, in_channels=1, num_classes=10, **({"width": width} if width else {}))
        return summarize(model, input_size=(1, side, side)).totals.macs
    except (InputTooSmall, InputSizeMismatch):
        return None


def practical_size(name: str, budget: int) -> tuple[int, float | None, int]:
    """(side, width or None, MACs) the model trains at here."""
    natural = model_spec(name).input_size[1]
    candidates = [natural] + [s for s in SIDES if s < natural]
    width = None
    while True:
        fitting = [(s, m) for s in candidates if (m := macs_at(name, s, width)) is not None]
        under = [(s, m) for s, m in fitting if m <= budget]
        if under:
            side, macs = max(under)
            return side, width, macs
        if "width" not in model_spec(name).options or name in FULL_WIDTH or (width or 1) <= MIN_WIDTH:
            side, macs = min(fitting, key=lambda f: f[1])  # the cheapest it takes
            return side, width, macs
        width = (width or 1) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patterns", nargs="*", default=["*"], help="shell patterns of model names")
    parser.add_argument("--macs", type=float, default=15e6, help="MACs budget per image (default 15M)")
    parser.add_argument("--epochs", type=int, help="fewer epochs than the recipes' (default: theirs)")
    parser.add_argument("--out", help="also write the table as CSV")
    args = parser.parse_args()
    rows = []
    print(f"{'model':<20} {'input':>5} {'width':>6} {'MACs':>8} {'recipe':<9} {'epochs':>6} {'seconds':>8} "
          f"{'best val_acc':>12}", flush=True)
    for name in sorted({name for pattern in args.patterns for name in list_models(pattern)}, key=list_models().index):
        side, width, macs = practical_size(name, args.macs)
        with tempfile.TemporaryDirectory() as runs_dir:  # a VGG's two checkpoints take a gigabyte or more
            config = TrainConfig(model=name, resize=side, epochs=args.epochs, runs_dir=runs_dir,
                                 model_args=[f"width={width}"] if width else None)
            started = time.perf_counter()
            run = train(config, progress="none")
            seconds = time.perf_counter() - started
            record, metrics = run.read_record(), run.metrics.rows()
        row = dict(model=name, input=side, width=width or 1, macs=macs, recipe=record.options.recipe,
                   epochs=len(metrics), seconds=round(seconds, 1),
                   best_val_acc=max(r["val_acc"] for r in metrics))
        rows.append(row)
        print(f"{name:<20} {side:>5} {row['width']:>6g} {macs / 1e6:>7.1f}M {row['recipe']:<9} {row['epochs']:>6} "
              f"{seconds:>8.1f} {row['best_val_acc']:>12.4f}", flush=True)
    below = [row["model"] for row in rows if row["best_val_acc"] < 0.95]
    print(f"\n{len(rows) - len(below)} of {len(rows)} models reach 0.95" + (f"; below: {', '.join(below)}" if below else ""))
    if args.out:
        write_rows(rows, args.out)


if __name__ == "__main__":
    main()
