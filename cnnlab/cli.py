"""The ``cnnlab`` command line: each command parses its options, calls one library function
and renders the result. torch, pandas and matplotlib are imported inside the commands so that
``cnnlab --help`` starts instantly.
"""

import functools
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from cnnlab.errors import CnnlabError

app = typer.Typer(
    help="A laboratory for the classic convolutional networks: inspect, train and compare them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEBUG_ENV = "CNNLAB_DEBUG"  # set to 1 to see the traceback behind a one-line error


def reports_errors(command):
    """Turn a CnnlabError (or an OS error such as an unwritable --out) into one line on
    stderr and the error's exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (CnnlabError, OSError) as error:
            if os.environ.get(DEBUG_ENV):
                raise
            code = error.exit_code if isinstance(error, CnnlabError) else 1
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code) from None

    return wrapper


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


ModelArg = Annotated[str, typer.Argument(help="Model name (see 'cnnlab models') or torchvision:<name>.")]
OutOption = Annotated[Optional[Path], typer.Option("--out", "-o", help="Write to this file instead of the screen.")]


def write_text(text: str, out: Optional[Path]) -> None:
    """Print ``text`` or write it to ``out``."""
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)


@app.command()
@reports_errors
def models(
    pattern: Annotated[str, typer.Argument(help="Shell-style filter, e.g. 'resnet*'.")] = "*",
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    out: OutOption = None,
):
    """List the model zoo: name, family, year, parameters at the default input, default input."""
    import csv
    import io
    import json

    from cnnlab.models import describe_models

    records = describe_models(pattern)
    columns = ["name", "family", "year", "params", "input", "classes", "description"]
    rows = [[r.name, r.family, r.year, r.params, "x".join(map(str, r.input_size)), r.num_classes,
             r.description] for r in records]
    if format is OutputFormat.json:
        write_text(json.dumps([dict(zip(columns, row)) for row in rows], indent=2), out)
    elif format is OutputFormat.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows([columns, *rows])
        write_text(buffer.getvalue(), out)
    else:
        from rich.console import Console
        from rich.table import Column, Table

        table = Table("name", "family", "year", Column("params", justify="right"), "input", "classes")
        for row in rows:
            table.add_row(*[f"{value:,}" if column == "params" else str(value)
                            for column, value in zip(columns, row[:-1])])
        console = Console() if out is None else Console(file=io.StringIO(), width=100)
        console.print(table)
        if out is not None:
            write_text(console.file.getvalue(), out)


@app.command()
@reports_errors
def summary(
    model: ModelArg,
    input: Annotated[Optional[str], typer.Option(
        "--input", "-i", help="Input size CxHxW, HxW or one side (default: the model's natural input).")] = None,
    classes: Annotated[Optional[int], typer.Option("--classes", "-c", min=1, help="Number of classes.")] = None,
    depth: Annotated[Optional[int], typer.Option(
        "--depth", "-d", min=1, help="Nesting level shown; containers there add up their layers (default: all).")] = None,
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    out: OutOption = None,
    explain: Annotated[bool, typer.Option(
        "--explain", help="Show the arithmetic behind output sizes, parameters, MACs and fields.")] = False,
):
    """Show every layer's output shape, parameters, MACs and receptive field (size, jump, start)."""
    from cnnlab.summary import parse_input_size, render_table, summarize, to_csv, to_json, to_text

    input_size = parse_input_size(input) if input is not None else None
    result = summarize(model, input_size=input_size, num_classes=classes)
    if format is OutputFormat.csv:
        write_text(to_csv(result, depth, explain), out)
    elif format is OutputFormat.json:
        write_text(to_json(result, depth), out)
    elif out is not None:
        write_text(to_text(result, depth, explain), out)
    else:
        from rich.console import Console

        Console(width=None if sys.stdout.isatty() else 160).print(render_table(result, depth, explain))


class OptimizerChoice(str, Enum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"


class ScheduleChoice(str, Enum):
    constant = "constant"
    step = "step"
    cosine = "cosine"
    onecycle = "onecycle"


class InitChoice(str, Enum):
    default = "default"
    xavier = "xavier"


class AmpChoice(str, Enum):
    auto = "auto"
    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"


class CheckpointChoice(str, Enum):
    last = "last"
    best = "best"


DATA, OPTIMISATION, DEVICE, STORE = "Data", "Optimisation", "Device and speed", "Run store"
# Defaults repeat TrainConfig's (cli.py must not import torch); a test keeps the two equal.
DataOption = Annotated[str, typer.Option(
    "--data", "-d", rich_help_panel=DATA, help="digits (embedded, no download), mnist, fashion-mnist, kmnist, "
    "cifar10, cifar100, svhn, or an ImageFolder directory. Its test split is reported as val_*.")]
DataDirOption = Annotated[Optional[Path], typer.Option(
    rich_help_panel=DATA, show_default=False, help="Where downloads go (default: $CNNLAB_DATA_DIR or ~/.cache/cnnlab).")]
ResizeOption = Annotated[Optional[int], typer.Option(
    min=1, rich_help_panel=DATA, show_default=False, help="Input side in pixels (default: the model's natural size, "
    "e.g. 28 for lenet, 224 for alexnet).")]
NormalizeOption = Annotated[bool, typer.Option(
    "--normalize/--no-normalize", rich_help_panel=DATA, help="Normalise with the training images' channel mean and std.")]
FlipOption = Annotated[Optional[bool], typer.Option(
    "--flip/--no-flip", rich_help_panel=DATA, show_default=False,
    help="Random horizontal flips (default: on, except for digit and character sets).")]
CropPaddingOption = Annotated[int, typer.Option(
    min=0, rich_help_panel=DATA, help="Random crops of the image padded by this many pixels (0: off).")]
EpochsOption = Annotated[int, typer.Option("--epochs", "-e", min=1, rich_help_panel=OPTIMISATION)]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", "-b", min=1, rich_help_panel=OPTIMISATION)]
OptimizerOption = Annotated[OptimizerChoice, typer.Option(rich_help_panel=OPTIMISATION)]
LrOption = Annotated[float, typer.Option(rich_help_panel=OPTIMISATION, help="Peak learning rate.")]
MomentumOption = Annotated[float, typer.Option(min=0, rich_help_panel=OPTIMISATION, help="SGD momentum.")]
NesterovOption = Annotated[bool, typer.Option("--nesterov", rich_help_panel=OPTIMISATION, help="Nesterov momentum (sgd).")]
WeightDecayOption = Annotated[float, typer.Option(min=0, rich_help_panel=OPTIMISATION)]
ScheduleOption = Annotated[ScheduleChoice, typer.Option(
    rich_help_panel=OPTIMISATION, help="Learning-rate schedule, updated every step.")]
WarmupOption = Annotated[float, typer.Option(
    "--warmup-epochs", min=0, rich_help_panel=OPTIMISATION, help="Linear warm-up before the schedule (not with onecycle).")]
StepEveryOption = Annotated[int, typer.Option(
    min=1, rich_help_panel=OPTIMISATION, help="step schedule: multiply the lr by --step-gamma every N epochs.")]
StepGammaOption = Annotated[float, typer.Option(min=0, rich_help_panel=OPTIMISATION)]
LabelSmoothingOption = Annotated[float, typer.Option(min=0, rich_help_panel=OPTIMISATION)]
ClipGradOption = Annotated[Optional[float], typer.Option(
    rich_help_panel=OPTIMISATION, show_default=False, help="Clip the gradient norm to this.")]
InitOption = Annotated[InitChoice, typer.Option(
    rich_help_panel=OPTIMISATION, help="Weights: PyTorch's default or xavier (d2l's).")]
SeedOption = Annotated[int, typer.Option(rich_help_panel=OPTIMISATION)]
DeviceOption = Annotated[str, typer.Option(rich_help_panel=DEVICE, help="auto, cpu, cuda, cuda:N or mps.")]
GpuOption = Annotated[Optional[int], typer.Option(
    min=0, rich_help_panel=DEVICE, show_default=False, help="Use CUDA GPU N (the same as --device cuda:N).")]
AmpOption = Annotated[AmpChoice, typer.Option(rich_help_panel=DEVICE, help=(
    "Mixed precision (fp16 needs a GPU); auto: bf16 on GPUs since Ampere and CPUs with AVX512-BF16 or AMX, else off."))]
ChannelsLastOption = Annotated[Optional[bool], typer.Option(
    "--channels-last/--no-channels-last", rich_help_panel=DEVICE, show_default=False,
    help="Channels-last memory format (default: on for CPU and CUDA).")]
CompileOption = Annotated[bool, typer.Option("--compile", rich_help_panel=DEVICE, help="torch.compile the model.")]
GpusOption = Annotated[Optional[str], typer.Option(
    rich_help_panel=DEVICE, show_default=False, metavar="N,N,...",
    help="Train on these GPUs of this machine at once, one process each (DistributedDataParallel, "
         "launched with torch.distributed.run); --batch-size is the global batch.")]
SyncBnOption = Annotated[bool, typer.Option(
    "--sync-bn", rich_help_panel=DEVICE, help="With several GPUs: batch norm over the global batch, not each GPU's share.")]
NameOption = Annotated[Optional[str], typer.Option(
    rich_help_panel=STORE, show_default=False, help="Run name (default: <model>-<data>-<timestamp>); never overwritten.")]
RunsDirOption = Annotated[Path, typer.Option(rich_help_panel=STORE, help="Where runs are stored.")]
ResumeOption = Annotated[Optional[Path], typer.Option(
    rich_help_panel=STORE, show_default=False, metavar="RUN",
    help="Continue RUN from its last finished epoch; only --epochs, --device/--gpu and --gpus may change.")]
RESUME_OPTIONS = ("resume", "epochs", "device", "gpu", "gpus")  # the options --resume accepts


def given_arguments(ctx: typer.Context, leave_out: tuple[str, ...] = ()) -> list[str]:
    """Arguments that give ``ctx``'s command the values it was given (defaults left out), less
    ``leave_out``: how --gpus hands the command on to its processes."""
    args = []
    for param in ctx.command.params:
        if param.name in leave_out or ctx.get_parameter_source(param.name).name == "DEFAULT":
            continue
        value = ctx.params[param.name]
        value = getattr(value, "value", value)  # a choice's Enum member
        if param.param_type_name == "argument":
            args.append(str(value))
        elif param.is_flag:
            args.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            args.append(f"{param.opts[0]}={value}")
    return args


def device_option(device: str, gpu: Optional[int]) -> str:
    if gpu is None:
        return device
    if device != "auto":
        from cnnlab.errors import UsageError

        raise UsageError("give --gpu or --device, not both")
    return f"cuda:{gpu}"


@app.command()
@reports_errors
def train(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Argument(
        show_default=False, help="Model name (see 'cnnlab models') or torchvision:<name>.")] = None,
    data: DataOption = "digits",
    data_dir: DataDirOption = None,
    resize: ResizeOption = None,
    normalize: NormalizeOption = True,
    flip: FlipOption = None,
    crop_padding: CropPaddingOption = 0,
    epochs: EpochsOption = 30,
    batch_size: BatchSizeOption = 64,
    optimizer: OptimizerOption = OptimizerChoice.adamw,
    lr: LrOption = 0.01,
    momentum: MomentumOption = 0.9,
    nesterov: NesterovOption = False,
    weight_decay: WeightDecayOption = 0.05,
    schedule: ScheduleOption = ScheduleChoice.cosine,
    warmup_epochs: WarmupOption = 2.0,
    step_every: StepEveryOption = 10,
    step_gamma: StepGammaOption = 0.1,
    label_smoothing: LabelSmoothingOption = 0.1,
    clip_grad: ClipGradOption = None,
    init: InitOption = InitChoice.default,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    gpu: GpuOption = None,
    amp: AmpOption = AmpChoice.auto,
    channels_last: ChannelsLastOption = None,
    compile: CompileOption = False,
    sync_bn: SyncBnOption = False,
    gpus: GpusOption = None,
    name: NameOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    resume: ResumeOption = None,
):
    """Train MODEL and record the run under runs/<name>: config.json, metrics.csv (one row per
    epoch; val_* is the data set's test split, as in d2l), summary.csv, last.pt and best.pt.

    Ctrl-C keeps every finished epoch (exit code 130); continue with --resume runs/<name>.
    Under torchrun (or with --gpus) every process runs this command and rank 0 records the run.
    """
    from dataclasses import replace

    from cnnlab.errors import TrainingInterrupted, UsageError
    from cnnlab.training import TrainConfig
    from cnnlab.training import train as train_model

    device = device_option(device, gpu)
    if resume is not None:
        given = {p.name: p.opts[0] if p.param_type_name == "option" else p.name.upper()
                 for p in ctx.command.params if ctx.get_parameter_source(p.name).name != "DEFAULT"}
        refused = [shown for name, shown in given.items() if name not in RESUME_OPTIONS]
        if refused:
            raise UsageError(f"--resume continues a run with its own options; {refused[0]} cannot be "
                             f"given (only --epochs, --device, --gpu and --gpus can)")
        changes = {"epochs": epochs} if "epochs" in given else {}
        if "device" in given or "gpu" in given:
            changes["device"] = device
        config = replace(TrainConfig.from_run(resume), **changes)
    elif model is None:
        raise UsageError("give the MODEL to train (see 'cnnlab models'), or --resume RUN")
    else:
        config = TrainConfig(
            model=model, data=data, data_dir=None if data_dir is None else str(data_dir), resize=resize,
            normalize=normalize, flip=flip, crop_padding=crop_padding, epochs=epochs, batch_size=batch_size,
            optimizer=optimizer.value, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
            schedule=schedule.value, warmup_epochs=warmup_epochs, step_every=step_every, step_gamma=step_gamma,
            label_smoothing=label_smoothing, clip_grad=clip_grad, init=init.value, seed=seed, device=device,
            amp=amp.value, channels_last=channels_last, compile=compile, sync_bn=sync_bn, name=name,
            runs_dir=str(runs_dir))
    if gpus is not None:  # one process per GPU, each running this command without --gpus
        from cnnlab.distributed import launch_on_gpus, parse_gpus

        if device != "auto":
            raise UsageError("--gpus chooses the GPUs; leave out --device and --gpu")
        code = launch_on_gpus(parse_gpus(gpus), ["train", *given_arguments(ctx, leave_out=("gpus",)), "--device=cuda"])
        raise typer.Exit(code)  # the processes have reported their own errors
    try:
        train_model(config, resume=resume)
    except KeyboardInterrupt:  # before the first epoch began: nothing to keep
        raise TrainingInterrupted("interrupted before training started") from None


@app.command("eval")
@reports_errors
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run directory or a checkpoint file (.pt).")],
    checkpoint: Annotated[CheckpointChoice, typer.Option(
        "--checkpoint", "-c", help="A run's last.pt (the final epoch in metrics.csv) or best.pt.")] = CheckpointChoice.last,
    data: Annotated[Optional[str], typer.Option(
        "--data", "-d", show_default=False,
        help="Another data set with the same channels and classes (default: the run's own test split).")] = None,
    data_dir: DataDirOption = None,
    device: DeviceOption = "auto",
    gpu: GpuOption = None,
    plot: Annotated[bool, typer.Option("--plot", help="Also draw the confusion matrix as confusion.png.")] = False,
):
    """Evaluate a run on a test split: loss, top-1 and top-5 accuracy, per-class precision,
    recall and accuracy, confusion matrix. Writes eval.csv and confusion.csv into the run."""
    from rich.console import Console
    from rich.table import Column, Table

    from cnnlab.evaluation import evaluate as evaluate_run

    result = evaluate_run(run, data, checkpoint=checkpoint.value, data_dir=data_dir,
                          device=device_option(device, gpu), plot=plot)
    console = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
    console.print(f"{result.checkpoint} (epoch {result.epoch}) on the {result.data} test split, "
                  f"{result.images} images")
    console.print(f"loss {result.loss:.4f}  top-1 {result.top1:.4f}  top-5 {result.top5:.4f}")
    columns = ["support", "accuracy", "precision", "recall", "top5_accuracy", "loss"]
    table = Table("class", *[Column(column, justify="right") for column in columns])
    for row in result.per_class:
        table.add_row(row["class"], *[str(row[c]) if c == "support" else f"{row[c]:.4f}" for c in columns])
    console.print(table)
    typer.echo(f"wrote {', '.join(str(path) for path in result.files)}", err=True)


def echo_run_problem(message: str) -> None:
    """A run that plot/compare skipped or left partly blank: one line on stderr."""
    typer.echo(f"warning: {message}", err=True)


DpiOption = Annotated[Optional[int], typer.Option(
    min=30, max=1200, show_default=False, help="Image resolution in dots per inch (default: 150).")]


@app.command()
@reports_errors
def plot(
    runs: Annotated[list[Path], typer.Argument(help="One or more run directories.",
                                               show_default=False)],
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", show_default=False,
        help="Image to write; .png, .svg or .pdf picks the format (default: plot.png inside a "
             "single run; for several, plot.png in the directory holding them).")] = None,
    lr: Annotated[Optional[bool], typer.Option(
        "--lr/--no-lr", show_default=False,
        help="Add a learning-rate panel (default: when the rate changes during a run).")] = None,
    dpi: DpiOption = None,
    show: Annotated[bool, typer.Option("--show", help="Also open the figure in a window.")] = False,
):
    """Draw loss and accuracy over epochs: colour = run, dashed = training, solid = validation,
    a star at the best validation accuracy. Runs still in progress plot what they have."""
    from cnnlab.plots import DEFAULT_DPI, plot_runs

    written = plot_runs(runs, out, lr=lr, dpi=dpi or DEFAULT_DPI, show=show,
                        on_problem=echo_run_problem)
    typer.echo(f"wrote {written}", err=True)


class CompareFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


@app.command()
@reports_errors
def compare(
    runs: Annotated[Optional[list[Path]], typer.Argument(
        help="Run directories (default: every run under --runs-dir).", show_default=False)] = None,
    runs_dir: Annotated[Optional[Path], typer.Option(
        "--runs-dir", show_default=False,
        help="Compare every run in this directory (default: runs/ when no RUN is given).")] = None,
    pattern: Annotated[str, typer.Option(
        "--filter",
        help="Keep the runs whose name matches this shell pattern, e.g. 'lenet*'.")] = "*",
    sort: Annotated[Optional[str], typer.Option(
        "--sort", show_default=False,
        help="Order by this column, best first: best_val_acc, final_val_acc and "
             "images_per_second descending; final_train_loss, final_val_loss, params, macs and "
             "mean_epoch_seconds ascending; also name, model, data, epochs, best_epoch, "
             "device.")] = None,
    reverse: Annotated[bool, typer.Option("--reverse", help="Reverse the --sort order.")] = False,
    format: Annotated[Optional[CompareFormat], typer.Option(
        "--format", "-f", show_default=False,
        help="Output format (default: from --out's extension .csv, .json or .md, else a "
             "table).")] = None,
    out: OutOption = None,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", show_default=False,
        help="Also draw every run's validation curves into this image (.png, .svg or .pdf), and "
             "accuracy against MACs and against params into FILE_efficiency.<ext> beside "
             "it.")] = None,
    dpi: DpiOption = None,
):
    """Compare runs side by side: best and final accuracy, losses, params, MACs and speed.
    Runs that cannot be read are reported and skipped; it fails only if none is left."""
    from cnnlab.compare import compare_runs, output_format, render, to_rich_table
    from cnnlab.plots import DEFAULT_DPI, efficiency_path, image_format, plot_efficiency, plot_runs

    if plot is not None:
        image_format(plot)  # a bad extension fails before any work
    table = compare_runs(runs, runs_dir=runs_dir, pattern=pattern, sort=sort, reverse=reverse,
                         on_problem=echo_run_problem)
    fmt = output_format(format.value if format else None, out)
    if fmt == "table" and out is None:
        from rich.console import Console

        console = Console()
        if not console.is_terminal:  # a pipe or a log has no width to fold the table into
            console = Console(width=200)
        console.print(to_rich_table(table))
    else:
        write_text(render(table, fmt), out)
    if plot is not None:
        dpi = dpi or DEFAULT_DPI
        curves = plot_runs(table["path"], plot, splits=("val",), lr=False, dpi=dpi,
                           title="validation curves",
                           on_problem=lambda message: None)  # compare_runs reported them
        efficiency = plot_efficiency(table, efficiency_path(plot), dpi=dpi)
        typer.echo(f"wrote {curves}\nwrote {efficiency}", err=True)


class ShowView(str, Enum):
    filters = "filters"
    activations = "activations"
    rf = "rf"
    cam = "cam"
    errors = "errors"


class NumbersFormat(str, Enum):
    csv = "csv"
    json = "json"


def parse_names(text: Optional[str]) -> Optional[list[str]]:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


@app.command()
@reports_errors
def show(
    what: Annotated[ShowView, typer.Argument(help="filters, activations, rf (receptive fields), cam (Grad-CAM) "
                                                  "or errors.")],
    target: Annotated[str, typer.Argument(help="A run directory (its trained weights) or a model name "
                                               "(random weights, or --weights imagenet).")],
    layer: Annotated[Optional[str], typer.Option(
        "--layer", "--layers", "-l", show_default=False, metavar="NAME[,NAME...]",
        help="Layers by their 'cnnlab summary' names, e.g. features.0 or layer1,layer4 (default: filters the "
             "first convolution; activations one per stage; rf and cam the last stage).")] = None,
    image: Annotated[Optional[str], typer.Option(
        "--image", "-i", show_default=False, metavar="N|FILE",
        help="Image N of the run's test split, or an image file (default: the first test images).")] = None,
    count: Annotated[Optional[int], typer.Option(
        min=1, show_default=False, help="cam and errors: how many test images to draw (default: 8 and 32).")] = None,
    unit: Annotated[Optional[str], typer.Option(
        show_default=False, metavar="ROW,COL", help="rf: the unit of the layer's map (default: the centre one).")] = None,
    samples: Annotated[int, typer.Option(min=1, help="rf: inputs the gradient is averaged over.")] = 16,
    share: Annotated[float, typer.Option(
        min=0.01, max=0.99, help="rf: share of the gradient mass inside the effective field.")] = 0.95,
    checkpoint: Annotated[CheckpointChoice, typer.Option(
        "--checkpoint", "-c", help="A run's best.pt or last.pt.")] = CheckpointChoice.best,
    weights: Annotated[Optional[str], typer.Option(
        show_default=False, help="imagenet: torchvision's published weights, for a model with a torchvision twin.")] = None,
    input: Annotated[Optional[str], typer.Option(
        "--input", show_default=False, help="A model name's input size HxW or one side (default: its natural one).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", show_default=False,
        help="Figure to write; .png, .svg or .pdf picks the format (default: <view>-<layer>.png in the run, "
             "or in the current directory for a model name).")] = None,
    format: Annotated[NumbersFormat, typer.Option(
        "--format", "-f", help="The numbers drawn, written beside the figure with this extension.")] = NumbersFormat.csv,
    dpi: DpiOption = None,
):
    """Pictures of what a network sees and has learned: first-layer filters, feature maps,
    theoretical and effective receptive fields, Grad-CAM, misclassified test images."""
    from cnnlab.plots import DEFAULT_DPI, image_format
    from cnnlab.show import VIEWS, load_subject, parse_unit, save_picture
    from cnnlab.summary import parse_input_size

    if out is not None:
        image_format(out)  # a bad extension fails before any work
    dpi = dpi or DEFAULT_DPI
    subject = load_subject(target, checkpoint=checkpoint.value, weights=weights,
                           input_size=parse_input_size(input) if input else None)
    layers = parse_names(layer)
    view = VIEWS[what.value]
    options = dict(filters=dict(layers=layers), activations=dict(image=image, layers=layers),
                   rf=dict(layers=layers, unit=parse_unit(unit), samples=samples, share=share),
                   cam=dict(image=image, count=count, layers=layers), errors=dict(count=count))[what.value]
    given = {name: value for name, value in options.items() if value is not None}  # else the view's default
    picture = view(subject, dpi=dpi, **given)
    written = save_picture(picture, out or subject.directory / f"{picture.stem}.png", format.value, dpi)
    typer.echo(f"wrote {', '.join(map(str, written))}", err=True)


def main() -> None:
    app()
