"""Runs written through the run store with realistic, made-up curves, for the tests of the
commands whose input is a run directory (plot, compare).

Curves: losses fall exponentially (faster for a larger ``pace``), training accuracy rises,
validation accuracy peaks at ``peak`` and then slowly falls (so the best epoch is not the
last), the learning rate follows a cosine schedule. Values are rounded as a CSV holds them.
"""

import csv
import math

from cnnlab.config import TrainConfig
from cnnlab.runs import METRICS_COLUMNS, Run, RunRecord

TRAIN_IMAGES = 1437  # the digits training split


def epoch_row(epoch: int, *, peak: int, ceiling: float, epochs: int, lr: float,
              pace: float) -> dict:
    seconds = 1.5 + 0.1 * (epoch % 3)
    return {
        "epoch": epoch,
        "train_loss": round(2.3 * math.exp(-0.5 * pace * epoch) + 0.05, 6),
        "train_acc": round(1 - 0.9 * math.exp(-0.6 * pace * epoch), 6),
        "val_loss": round(2.3 * math.exp(-0.45 * pace * epoch) + 0.1
                          + 0.03 * max(0, epoch - peak), 6),
        "val_acc": round(ceiling - 0.6 * math.exp(-0.8 * min(epoch, peak))
                         - 0.015 * max(0, epoch - peak), 6),
        "lr": round(lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs)), 8),
        "epoch_seconds": seconds,
        "images_per_second": round(TRAIN_IMAGES / seconds, 3),
        "train_tflops": round(TRAIN_IMAGES / seconds * 2.26e6 / 1e12, 9),  # lenet's training FLOPs an image
        "utilisation": round(TRAIN_IMAGES / seconds * 2.26e6 / 5e11, 9),  # on a 0.5 TFLOP/s device
    }


def make_run(runs_dir, name, *, model="lenet", data="digits", epochs=6, finished=None, peak=4,
             ceiling=0.95, pace=1.0, lr=0.1, params=61706, macs=416520, columns=METRICS_COLUMNS,
             **config) -> Run:
    """A run with ``finished`` of ``epochs`` epochs on disk (all of them by default).

    ``columns`` other than METRICS_COLUMNS writes an older-style metrics.csv; ``params`` or
    ``macs`` None leaves model_stats out of config.json, as older runs do.
    """
    run = Run.create(runs_dir, name)
    options = TrainConfig(**{"model": model, "data": data, "epochs": epochs, "batch_size": 64, "optimizer": "sgd",
                             "lr": lr, "device": "cpu", "name": name, "runs_dir": str(runs_dir),
                             **{k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__}})
    stats = None if params is None or macs is None else {"params": params, "trainable_params": params, "macs": macs}
    described = {"input_size": (1, 28, 28), "num_classes": 10, "model_stats": stats, "created": "2025-01-01T00:00:00",
                 **{k: v for k, v in config.items() if k not in TrainConfig.__dataclass_fields__}}
    run.write_record(RunRecord(options, **described))
    run.release()
    rows = [epoch_row(e, peak=peak, ceiling=ceiling, epochs=epochs, lr=lr, pace=pace)
            for e in range(1, (epochs if finished is None else finished) + 1)]
    if list(columns) == METRICS_COLUMNS:
        for row in rows:
            run.metrics.append(row)
    else:
        with open(run.metrics.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return run
