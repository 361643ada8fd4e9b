"""The ``cnnlab`` command line: each command parses its options, calls one library function
and renders the result. torch, pandas and matplotlib are imported inside the commands so that
``cnnlab --help`` starts instantly.
"""

import functools
import inspect
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from cnnlab.config import DEVICE as DEVICE_PANEL
from cnnlab.config import MODEL as MODEL_PANEL
from cnnlab.completion import complete_experiment, complete_model, complete_model_or_run, complete_run
from cnnlab.config import STORE as STORE_PANEL
from cnnlab.errors import CnnlabError
from cnnlab.helptext import ReadableCommand, ReadableGroup

app = typer.Typer(
    help="A laboratory for the classic convolutional networks: inspect, train and compare them.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion (cnnlab/completion.py)
    cls=ReadableGroup,
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
            try:
                typer.echo(f"error: {error}", err=True)
            except OSError:  # stderr is gone too (a closed terminal): the exit code says it
                pass
            raise typer.Exit(code) from None

    return wrapper


class DiagramFormat(str, Enum):
    svg = "svg"
    pdf = "pdf"
    png = "png"
    dot = "dot"
    mmd = "mmd"
    json = "json"


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


OUTPUT_PANEL = "Output"
# the same flag means the same thing in every command
MODEL_HELP = "Model name (see 'cnnlab models'), torchvision:<name>, or your own: FILE.py:Name or package.module:Name."
ModelArg = Annotated[str, typer.Argument(help=MODEL_HELP, autocompletion=complete_model)]
OutOption = Annotated[Optional[Path], typer.Option(
    "--out", "-o", show_default=False, rich_help_panel=OUTPUT_PANEL, help="Write to this file instead of the screen.")]
FormatOption = Annotated[Optional[OutputFormat], typer.Option(
    "--format", "-f", show_default=False, rich_help_panel=OUTPUT_PANEL,
    help="table, csv, json or markdown (default: from --out's extension .csv, .json or .md, else a table).")]
WideOption = Annotated[bool, typer.Option(
    "--wide", rich_help_panel=OUTPUT_PANEL, help="Every column of the table, however wide (a narrow terminal leaves out the least "
                   "important ones and names them under the table; a pipe or a file gets them all).")]
InputOption = Annotated[Optional[str], typer.Option(
    "--input", "-i", rich_help_panel=MODEL_PANEL, help="Input size CxHxW, HxW or one side (default: the model's natural input).")]
ClassesOption = Annotated[Optional[int], typer.Option(
    help="Number of classes.", show_default=False, rich_help_panel=MODEL_PANEL)]
COST_PANEL = "Training cost"
ModelArgsOption = Annotated[Optional[list[str]], typer.Option(
    "--model-arg", show_default=False, metavar="KEY=VALUE", rich_help_panel=MODEL_PANEL,
    help="A model option, e.g. width=0.5 or attention=se (repeat for several).")]
DpiOption = Annotated[Optional[int], typer.Option(
    min=30, max=1200, show_default=False, rich_help_panel=OUTPUT_PANEL, help="Image resolution in dots per inch (default: 150).")]
DataDirOption = Annotated[Optional[Path], typer.Option(
    show_default=False, help="Where downloads go (default: $CNNLAB_DATA_DIR or ~/.cache/cnnlab).")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
GpuOption = Annotated[Optional[int], typer.Option(
    rich_help_panel=DEVICE_PANEL, show_default=False, help="Use CUDA GPU N (the same as --device cuda:N).")]


def chosen_device(device: str, gpu: Optional[int], device_given: bool) -> str:
    """--device, or --gpu N as cuda:N; the two together are refused."""
    if gpu is None:
        return device
    if device_given:
        from cnnlab.errors import UsageError

        raise UsageError("give --gpu or --device, not both")
    return f"cuda:{gpu}"


class ModelSource(str, Enum):
    file = "file"
    run = "run"


MODEL_SOURCE_HELP = ("A run on your own network whose file changed or moved since training: build it "
                     "from the current file, or from the copy kept in the run (runs that copy's code).")
ModelSourceOption = Annotated[Optional[ModelSource], typer.Option(show_default=False, help=MODEL_SOURCE_HELP)]


@app.command(cls=ReadableCommand)
@reports_errors
def models(
    pattern: Annotated[str, typer.Argument(
        help="Shell-style filter, e.g. 'resnet*'; one model's name (or FILE.py:Name) also lists its options.")] = "*",
    recipes: Annotated[bool, typer.Option(
        "--recipes", help="List the training recipes instead: what each sets, and for which models.")] = False,
    format: FormatOption = None,
    out: OutOption = None,
    wide: WideOption = False,
):
    """List the model zoo, or one model's options.

    Each model's name, family, year, parameters and input at the defaults, and its default
    training recipe; --recipes lists the recipes themselves.

    Examples:
    cnnlab models
    cnnlab models 'resnet*'
    cnnlab models googlenet
    """
    from cnnlab.render import output_format, rows_as, show

    fmt = output_format(format and format.value, out)
    if recipes:
        from cnnlab.config import describe_recipes

        show(rows_as(describe_recipes(), fmt, prose=("settings", "description")), out, wide)
        return
    from cnnlab.models import describe_models, option_rows

    records = describe_models(pattern)
    rows = [dict(name=r.name, family=r.family, year=r.year, params=r.params,
                 input="x".join(map(str, r.input_size)), classes=r.num_classes, recipe=r.recipe,
                 **({"description": r.description, "options": " ".join(
                     f"{o['option']}:{o['type']}={o['default']}" for o in option_rows(r))}
                    if fmt in ("csv", "json") else {}))
            for r in records]
    content = rows_as(rows, fmt, right=("params", "classes"), drop_order=("classes", "year", "family", "input"))
    if [r.name for r in records] == [pattern] and fmt in ("table", "markdown"):  # one model: its options too
        options = option_rows(records[0]) or [dict(option="(none)", type="", default="")]
        listing = rows_as(options, fmt, title=f"--model-arg options of {pattern}")
        from rich.console import Group

        content = Group(content, listing) if fmt == "table" else f"{content}\n{listing}"
    show(content, out, wide)


@app.command(cls=ReadableCommand)
@reports_errors
def summary(
    model: ModelArg,
    input: InputOption = None,
    classes: ClassesOption = None,
    model_args: ModelArgsOption = None,
    depth: Annotated[Optional[int], typer.Option(
        help="Nesting level shown; containers there add up their layers (default: all).", show_default=False)] = None,
    format: FormatOption = None,
    out: OutOption = None,
    explain: Annotated[bool, typer.Option(
        "--explain", help="Show the arithmetic behind output sizes, parameters, MACs and fields.")] = False,
    training: Annotated[bool, typer.Option(
        "--training", rich_help_panel=COST_PANEL,
        help="What one training step costs: FLOPs forward and backward, memory at --batch-size.")] = False,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", "-b", rich_help_panel=COST_PANEL, show_default=False,
        help="Images per step (--training; default 1); with --fit the most to consider.")] = None,
    optimizer: Annotated[str, typer.Option(
        rich_help_panel=COST_PANEL, help="sgd, adam or adamw: its state counts in the memory.")] = "sgd",
    momentum: Annotated[float, typer.Option(
        rich_help_panel=COST_PANEL, help="SGD momentum (above 0: one buffer per weight).")] = 0.0,
    amp: Annotated[str, typer.Option(
        rich_help_panel=COST_PANEL, help="off, bf16 or fp16: activations in 16 bits.")] = "off",
    fit: Annotated[bool, typer.Option(
        "--fit", rich_help_panel=COST_PANEL,
        help="The largest batch whose peak fits the free memory of --device.")] = False,
    device: Annotated[str, typer.Option(
        rich_help_panel=COST_PANEL, help="--fit: auto (the training device), cpu, cuda or cuda:N.")] = "auto",
    measure: Annotated[bool, typer.Option(
        "--measure", rich_help_panel=COST_PANEL,
        help="--fit: run one real training step at that batch and compare its peak.")] = False,
    wide: WideOption = False,
):
    """Show every layer's output shape, parameters, MACs and receptive field.

    The receptive field is given as its size, its jump (the stride between neighbouring units,
    in input pixels) and the start (the centre of the first unit). --explain shows the
    arithmetic behind each number. --training adds what one training step costs (FLOPs forward
    and backward, the memory it keeps); --fit finds the largest batch that fits.

    Examples:
    cnnlab summary vgg16 --depth 1
    cnnlab summary lenet --explain --format csv --out lenet.csv
    cnnlab summary resnet18 --input 32 --training --batch-size 128 --optimizer adamw
    """
    from cnnlab.render import output_format, show

    fmt = output_format(format and format.value, out, allowed=("table", "csv", "json"))
    input_size, classes, options = model_request(model, input, classes, model_args, depth=depth)
    if training or fit:
        from cnnlab.summary import cost_to_csv, cost_to_json, render_cost_table, training_cost
        from cnnlab.summary.cost import check_training_options

        check_training_options(1 if batch_size is None else batch_size, optimizer, momentum, amp)
        if fit:
            from cnnlab.summary.fit import fit_batch
            from cnnlab.summary.report import render_fit

            found = fit_batch(model, input_size=input_size, num_classes=classes, model_args=options,
                              optimizer=optimizer, momentum=momentum, amp=amp, device=device, measure=measure,
                              limit=batch_size)
            show(render_fit(found), out)
            return
        cost = training_cost(model, input_size=input_size, num_classes=classes, model_args=options,
                             batch_size=batch_size or 1, optimizer=optimizer, momentum=momentum, amp=amp)
        content = {"csv": lambda: cost_to_csv(cost, depth), "json": lambda: cost_to_json(cost, depth),
                   "table": lambda: render_cost_table(cost, depth)}[fmt]()
        show(content, out, wide)
        return
    from cnnlab.summary import render_table, summarize, to_csv, to_json

    result = summarize(model, input_size=input_size, num_classes=classes, model_args=options)
    content = {"csv": lambda: to_csv(result, depth, explain), "json": lambda: to_json(result, depth),
               "table": lambda: render_table(result, depth, explain)}[fmt]()
    show(content, out, wide)


def model_request(model: str, input: Optional[str], classes: Optional[int], model_args: Optional[list[str]],
                  depth: Optional[int] = None):
    """--input, --classes and --model-arg of a command that builds MODEL, checked: (input size,
    classes, model options); a run directory's options are its own, so they are passed on as given."""
    from cnnlab.config import check_bounds
    from cnnlab.summary import parse_input_size

    for name, value in (("--classes", classes), ("--depth", depth)):
        if value is not None:
            check_bounds(name, value, low=1, high=1_000_000)
    input_size = parse_input_size(input) if input is not None else None
    if not model_args or "/" in model or Path(model).exists():
        return input_size, classes, model_args or None
    from cnnlab.models import model_options

    return input_size, classes, model_options(model, model_args)


@app.command(cls=ReadableCommand)
@reports_errors
def draw(
    model: Annotated[str, typer.Argument(
        help="Model name (see 'cnnlab models'), torchvision:<name>, or a run directory (its model and input).",
        autocompletion=complete_model_or_run)],
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", show_default=False, rich_help_panel=OUTPUT_PANEL,
        help="File to write; the extension picks the format: .svg, .pdf, .png, .dot (Graphviz), .mmd "
             "(Mermaid) or .json (the graph as data) (default: MODEL.svg).")] = None,
    depth: Annotated[Optional[int], typer.Option(
        show_default=False, help="Fold every module at this nesting level into one box (1: the model's "
                                 "direct children, such as a ResNet stage or an Inception module).")] = None,
    expand: Annotated[bool, typer.Option(
        "--expand", help="Show every layer: no folding of repeated blocks into one 'x n' box.")] = False,
    unfold: Annotated[Optional[str], typer.Option(
        show_default=False, metavar="NAME[,NAME...]",
        help="Show these modules layer by layer even where --depth or a repetition would fold them.")] = None,
    input: InputOption = None,
    classes: ClassesOption = None,
    model_args: ModelArgsOption = None,
    format: Annotated[Optional[DiagramFormat], typer.Option(
        "--format", "-f", show_default=False, rich_help_panel=OUTPUT_PANEL, help="Write this format whatever the extension of --out.")] = None,
    dpi: DpiOption = None,
):
    """Draw a network's architecture as a diagram.

    One box per layer (kind, hyper-parameters, output shape, params), branches as branches,
    repeated blocks folded into 'x n', colours by kind.

    Examples:
    cnnlab draw vgg16
    cnnlab draw googlenet --depth 1 --unfold inception.3a --out googlenet.png
    cnnlab draw resnet18 --out resnet18.mmd
    """
    from cnnlab.diagram import diagram_format, network_diagram, save_diagram
    from cnnlab.plots import DEFAULT_DPI

    fmt = format and format.value
    if out is None:
        out = Path(f"{Path(model).name.replace(':', '_')}.{fmt or 'svg'}")
    fmt = diagram_format(out, fmt)  # a bad extension fails before any work
    input_size, classes, options = model_request(model, input, classes, model_args, depth=depth)
    picture = network_diagram(model, input_size, num_classes=classes, model_args=options, depth=depth, expand=expand,
                      unfold=parse_names(unfold) or ())
    typer.echo(f"wrote {save_diagram(picture, out, fmt, dpi=dpi or DEFAULT_DPI)}", err=True)


class CheckpointChoice(str, Enum):
    last = "last"
    best = "best"


# -- cnnlab train: its options are TrainConfig's fields (cnnlab/config.py), written there once ----

def config_parameter(field, hint) -> inspect.Parameter:
    """The command-line option of one TrainConfig field, whose resolved annotation is ``hint``
    (a Literal of names becomes a choice: an Enum, which is how Typer takes choices)."""
    from cnnlab.config import base_type, choices, flag_name

    meta, names = field.metadata, choices(hint)
    python_type = Enum(f"{field.name.title()}Choice", {c: c for c in names}, type=str) if names else base_type(hint)
    flags = [meta["flag"] or flag_name(field.name), *([meta["short"]] if meta["short"] else [])]
    help = meta["help"] + (" [default: the recipe's]" if meta["recipe"] and "recipe" not in meta["help"] else "")
    info = typer.Option(*flags, help=help, rich_help_panel=meta["panel"], show_default=field.default is not None)
    annotation = Annotated[Optional[python_type] if base_type(hint) is not hint else python_type, info]
    default = python_type(field.default) if names and field.default is not None else field.default
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def config_parameters(leave_out: tuple[str, ...]) -> list[inspect.Parameter]:
    """The command-line options of TrainConfig's fields, less ``leave_out``."""
    from typing import get_type_hints

    from cnnlab.config import TrainConfig, option_fields

    hints = get_type_hints(TrainConfig)
    return [config_parameter(f, hints[f.name]) for f in option_fields() if f.name not in leave_out]


CONFIG_PANEL = "Config file"
ConfigOption = Annotated[Optional[Path], typer.Option(
    "--config", rich_help_panel=CONFIG_PANEL, show_default=False, metavar="FILE",
    help="Read the options from FILE: TOML (.toml) or JSON, keys named as the options (batch-size or "
         "batch_size); options on the command line override it. A run directory or its config.json "
         "starts a new run with that run's options.")]
CLI_ONLY = [  # options of the command line that are not training options
    ("config", ConfigOption, None),
    ("quiet", Annotated[bool, typer.Option(
        "--quiet", "-q", help="Print only the last line: the best accuracy and where the run is saved.")], False),
    ("print_config", Annotated[bool, typer.Option(
        "--print-config", rich_help_panel=CONFIG_PANEL,
        help="Print the options as a TOML config file (the recipe's values filled in) and train nothing.")],
     False),
    ("gpu", GpuOption, None),
    ("gpus", Annotated[Optional[str], typer.Option(
        rich_help_panel=DEVICE_PANEL, show_default=False, metavar="N,N,...",
        help="Train on these GPUs of this machine at once, one process each (DistributedDataParallel, "
             "launched with torch.distributed.run); --batch-size is the global batch.")], None),
    ("resume", Annotated[Optional[Path], typer.Option(
        rich_help_panel=STORE_PANEL, show_default=False, metavar="RUN", autocompletion=complete_run,
        help="Continue RUN from its last finished epoch; only --epochs (up), --device/--gpu and --gpus may change.")],
     None),
    ("model_source", Annotated[Optional[ModelSource], typer.Option(
        rich_help_panel=STORE_PANEL, show_default=False, help="With --resume: " + MODEL_SOURCE_HELP)], None),
]


def train(ctx: typer.Context, model: Optional[str] = None, **options):
    """Train a model and record the run under runs/<name>.

    The run holds config.json, metrics.csv (one row per epoch; val_* is the data set's test
    split, as in d2l), summary.csv, last.pt and best.pt. Options left out come from the model's
    recipe ('cnnlab models --recipes').

    Ctrl-C or SIGTERM keeps every finished epoch (exit code 130 or 143); continue with --resume
    runs/<name>. Under torchrun (or with --gpus) every process runs this command and rank 0
    records the run.

    Examples:
    cnnlab train lenet --epochs 5
    cnnlab train resnet18 --data cifar10 --lr 0.1 --schedule onecycle
    cnnlab train --resume runs/lenet-digits-20250101-120000 --epochs 10
    """
    from cnnlab.config import RESUMABLE, TrainConfig
    from cnnlab.errors import TrainingInterrupted, UsageError

    given = {p.name: (p.opts[0] if p.param_type_name == "option" else p.name.upper())
             for p in ctx.command.params if is_given(ctx, p.name)}
    options = {name: getattr(value, "value", value) for name, value in options.items()}
    gpu, gpus, resume_from = options.pop("gpu"), options.pop("gpus"), options.pop("resume")
    model_source, config_file, print_config = options.pop("model_source"), options.pop("config"), options.pop("print_config")
    progress = "final" if options.pop("quiet") else "auto"
    if config_file is not None:
        if resume_from is not None:
            raise UsageError("--config starts a new run; --resume continues one with its own options")
        from_file = options_from_file(config_file, given)
        model = model if model is not None else from_file.pop("model", None)
        options.update({name: value for name, value in from_file.items() if name != "model"})
    if model_source is not None and resume_from is None:
        raise UsageError("--model-source applies to --resume RUN")
    if gpu is not None:
        options["device"], given["device"] = chosen_device(options["device"], gpu, "device" in given), "--gpu"
    if gpus is not None and ("device" in given):
        raise UsageError("--gpus chooses the GPUs; leave out --device and --gpu")
    if resume_from is not None:
        refused = [shown for name, shown in given.items() if name not in (*RESUMABLE, "resume", "gpus", "model_source", "quiet")]
        if refused:
            raise UsageError(f"--resume continues a run with its own options; {refused[0]} cannot be "
                             f"given (only --epochs, --device, --gpu and --gpus can)")
        changes = {name: options[name] for name in RESUMABLE if name in given}
    elif model is None:
        raise UsageError("give the MODEL to train (see 'cnnlab models'), or --resume RUN")
    else:
        config = TrainConfig(model=model, **options)
        config.validate()  # before launching processes or importing torch
    if print_config:
        if resume_from is not None:
            raise UsageError("--print-config prints a new run's options; a resumed run's are in its config.json")
        from cnnlab.config_file import options_toml
        from cnnlab.models import default_recipe, model_spec

        typer.echo(options_toml(config.with_recipe(model_spec(config.model).family, default_recipe(config.model))),
                   nl=False)
        return
    if gpus is not None:  # one process per GPU, each running this command without --gpus
        from cnnlab.distributed import launch_on_gpus, parse_gpus

        code = launch_on_gpus(parse_gpus(gpus), ["train", *given_arguments(ctx, leave_out=("gpus",)), "--device=cuda"])
        raise typer.Exit(code)  # the processes have reported their own errors
    try:
        if resume_from is not None:
            from cnnlab.training import resume

            resume(resume_from, **changes, model_source=model_source, progress=progress)
        else:
            from cnnlab.training import train as train_model

            train_model(config, progress=progress)
    except KeyboardInterrupt:  # before the first epoch began: nothing to keep
        raise TrainingInterrupted("interrupted before training started") from None


def options_from_file(path: Path, given: dict) -> dict:
    """The options FILE gives that the command line does not (it overrides the file)."""
    from cnnlab.config_file import read_options

    return {name: value for name, value in read_options(path).items() if name not in given}


def build_train_command() -> None:
    """Register ``train`` with one option per TrainConfig field plus CLI_ONLY."""
    parameters = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                          annotation=Annotated[Optional[str], typer.Argument(
                              show_default=False, metavar="MODEL", help=MODEL_HELP, autocompletion=complete_model)]),
        *config_parameters(leave_out=("model",)),
        *[inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
          for name, annotation, default in CLI_ONLY],
    ]
    register(train, parameters)


def register(function, parameters: list[inspect.Parameter]) -> None:
    """Register ``function(ctx, ..., **options)`` as a command whose options are ``parameters``
    (built from TrainConfig's fields, so they are written once, in cnnlab/config.py)."""
    command = reports_errors(function)
    command.__signature__ = inspect.Signature(parameters)
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    app.command(function.__name__, cls=ReadableCommand)(command)


def is_given(ctx: typer.Context, name: str) -> bool:
    """Whether the command line set parameter ``name`` (rather than leaving it at its default)."""
    return ctx.get_parameter_source(name).name != "DEFAULT"


def given_arguments(ctx: typer.Context, leave_out: tuple[str, ...] = ()) -> list[str]:
    """Arguments that give ``ctx``'s command the values it was given (defaults left out), less
    ``leave_out``: how --gpus hands the command on to its processes."""
    args = []
    for param in ctx.command.params:
        if param.name in leave_out or not is_given(ctx, param.name):
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


build_train_command()


@app.command("eval", cls=ReadableCommand)
@reports_errors
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run directory or a checkpoint file (.pt).", autocompletion=complete_run)],
    checkpoint: Annotated[CheckpointChoice, typer.Option(
        "--checkpoint", "-c", help="A run's last.pt (the final epoch in metrics.csv) or best.pt.")] = CheckpointChoice.last,
    data: Annotated[Optional[str], typer.Option(
        "--data", "-d", show_default=False,
        help="Another data set with the same channels and classes (default: the run's own test split).")] = None,
    data_dir: DataDirOption = None,
    device: DeviceOption = "auto",
    gpu: GpuOption = None,
    plot: Annotated[bool, typer.Option("--plot", help="Also draw the confusion matrix as confusion.png.")] = False,
    model_source: ModelSourceOption = None,
    wide: WideOption = False,
):
    """Evaluate a run on a test split.

    Loss, top-1 and top-5 accuracy, per-class precision, recall and accuracy, and the confusion
    matrix. Writes eval.csv and confusion.csv into the run.

    Examples:
    cnnlab eval runs/lenet-digits-20250101-120000
    cnnlab eval runs/lenet-digits-20250101-120000 --checkpoint best --plot
    cnnlab eval runs/lenet-mnist-20250101-120000 --data kmnist
    """
    from cnnlab.evaluation import evaluate as evaluate_run

    from cnnlab.render import console, rows_as

    result = evaluate_run(run, data, checkpoint=checkpoint.value, data_dir=data_dir,
                          device=chosen_device(device, gpu, device != "auto"), plot=plot,
                          model_source=model_source and model_source.value)
    screen = console(wide=wide)
    screen.print(f"{result.checkpoint} (epoch {result.epoch}) on the {result.data} test split, "
                 f"{result.images} images")
    screen.print(f"loss {result.loss:.4f}  top-1 {result.top1:.4f}  top-5 {result.top5:.4f}")
    columns = ["support", "accuracy", "precision", "recall", "top5_accuracy", "loss"]
    rows = [{"class": row["class"], **{c: row[c] if c == "support" else f"{row[c]:.4f}" for c in columns}}
            for row in result.per_class]
    screen.print(rows_as(rows, "table", right=tuple(columns),
                         drop_order=("loss", "top5_accuracy", "support", "precision", "recall")))
    typer.echo(f"wrote {', '.join(str(path) for path in result.files)}", err=True)


def echo_run_problem(message: str) -> None:
    """A run that plot/compare skipped or left partly blank: one line on stderr."""
    typer.echo(f"warning: {message}", err=True)




@app.command(cls=ReadableCommand)
@reports_errors
def plot(
    runs: Annotated[list[Path], typer.Argument(help="One or more run directories.", show_default=False,
                                               autocompletion=complete_run)],
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
    """Draw loss and accuracy over epochs.

    Colour = run, dashed = training, solid = validation, a star at the best validation
    accuracy. Runs still in progress plot what they have.

    Examples:
    cnnlab plot runs/lenet-digits-20250101-120000
    cnnlab plot runs/lenet-* --out curves.svg
    """
    from cnnlab.plots import DEFAULT_DPI, plot_runs

    written = plot_runs(runs, out, lr=lr, dpi=dpi or DEFAULT_DPI, show=show,
                        on_problem=echo_run_problem)
    typer.echo(f"wrote {written}", err=True)


@app.command(cls=ReadableCommand)
@reports_errors
def compare(
    runs: Annotated[Optional[list[Path]], typer.Argument(
        help="Run directories (default: every run under --runs-dir).", show_default=False,
        autocompletion=complete_run)] = None,
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
    format: FormatOption = None,
    out: OutOption = None,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", show_default=False,
        help="Also draw every run's validation curves into this image (.png, .svg or .pdf), and "
             "accuracy against MACs and against params into FILE_efficiency.<ext> beside "
             "it.")] = None,
    dpi: DpiOption = None,
    wide: WideOption = False,
):
    """Compare runs side by side.

    Best and final accuracy, losses, params, MACs and speed, one row per run. Runs that cannot
    be read are reported and skipped; it fails only if none is left.

    Examples:
    cnnlab compare
    cnnlab compare --filter 'resnet*' --sort best_val_acc
    cnnlab compare --format json | jq '.[0].best_val_acc'
    """
    from cnnlab.compare import compare_runs, render, to_rich_table
    from cnnlab.render import output_format, show
    from cnnlab.plots import DEFAULT_DPI, efficiency_path, image_format, plot_efficiency, plot_runs

    if plot is not None:
        image_format(plot)  # a bad extension fails before any work
    table = compare_runs(runs, runs_dir=runs_dir, pattern=pattern, sort=sort, reverse=reverse,
                         on_problem=echo_run_problem)
    fmt = output_format(format and format.value, out)
    show(to_rich_table(table) if fmt == "table" else render(table, fmt), out, wide)
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


@app.command(cls=ReadableCommand)
@reports_errors
def show(
    ctx: typer.Context,
    what: Annotated[ShowView, typer.Argument(help="filters, activations, rf (receptive fields), cam (Grad-CAM) "
                                                  "or errors.")],
    target: Annotated[str, typer.Argument(help="A run directory (its trained weights) or a model name or "
                                               "FILE.py:Name (random weights, or --weights imagenet).",
                                          autocompletion=complete_model_or_run)],
    layers: Annotated[Optional[str], typer.Option(
        "--layer", "--layers", "-l", show_default=False, metavar="NAME[,NAME...]",
        help="Layers by their 'cnnlab summary' names, e.g. features.0 or layer1,layer4 (default: filters the "
             "first convolution; activations one per stage; rf and cam the last stage).")] = None,
    image: Annotated[Optional[str], typer.Option(
        "--image", show_default=False, metavar="N|FILE",
        help="Image N of the run's test split, or an image file (default: the first test images).")] = None,
    count: Annotated[Optional[int], typer.Option(
        min=1, show_default=False, help="cam and errors: how many test images to draw (default: 8 and 32).")] = None,
    unit: Annotated[Optional[str], typer.Option(
        show_default=False, metavar="ROW,COL", help="rf: the unit of the layer's map (default: the centre one).")] = None,
    samples: Annotated[int, typer.Option(min=1, help="rf: inputs the gradient is averaged over.")] = 16,
    share: Annotated[float, typer.Option(
        min=0.01, max=0.99, help="rf: share of the gradient mass inside the effective field.")] = 0.95,
    checkpoint: Annotated[CheckpointChoice, typer.Option(
        "--checkpoint", "-c", help="A run's last.pt (the final epoch, as eval) or best.pt.")] = CheckpointChoice.last,
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
    model_source: ModelSourceOption = None,
):
    """Pictures of what a network sees and has learned.

    First-layer filters, feature maps, theoretical and effective receptive fields, Grad-CAM
    and the misclassified test images.

    Examples:
    cnnlab show filters runs/lenet-digits-20250101-120000
    cnnlab show rf resnet18 --layer layer4
    cnnlab show cam runs/lenet-digits-20250101-120000 --count 4
    """
    from cnnlab.errors import UsageError
    from cnnlab.plots import DEFAULT_DPI, image_format
    from cnnlab.show import VIEWS, load_subject, parse_unit, save_picture, view_options
    from cnnlab.summary import parse_input_size

    # a view's options are its function's keyword parameters (the command's of the same name); those
    # not given keep the view's defaults, and one given to a view that does not take it is refused
    every_option = dict.fromkeys(name for view_name in VIEWS for name in view_options(view_name))
    given = {name: ctx.params[name] for name in every_option if is_given(ctx, name)}
    misplaced = [name for name in given if name not in view_options(what.value)]
    if misplaced:
        flag = next(param.opts[0] for param in ctx.command.params if param.name == misplaced[0])
        takers = [view_name for view_name in VIEWS if misplaced[0] in view_options(view_name)]
        raise UsageError(f"{what.value} does not take {flag} (it is for {', '.join(takers)})")
    if out is not None:
        image_format(out)  # a bad extension fails before any work
    dpi = dpi or DEFAULT_DPI
    subject = load_subject(target, checkpoint=checkpoint.value, weights=weights,
                           input_size=parse_input_size(input) if input else None,
                           model_source=model_source and model_source.value)
    if "layers" in given:
        given["layers"] = parse_names(given["layers"])
    if "unit" in given:
        given["unit"] = parse_unit(given["unit"])
    picture = VIEWS[what.value](subject, dpi=dpi, **given)
    written = save_picture(picture, out or subject.directory / f"{picture.stem}.png", format.value, dpi)
    typer.echo(f"{what.value} of {subject.description}\nwrote {', '.join(map(str, written))}", err=True)


@app.command(cls=ReadableCommand)
@reports_errors
def export(
    target: Annotated[str, typer.Argument(
        help="A run directory (its trained weights) or a model name (random weights).",
        autocompletion=complete_model_or_run)],
    out: Annotated[Path, typer.Option(
        "--out", "-o", rich_help_panel=OUTPUT_PANEL,
        help=".onnx (needs the cnnlab[onnx] extra), .pt (TorchScript) or .pt2 (torch.export).")],
    checkpoint: Annotated[CheckpointChoice, typer.Option(
        "--checkpoint", "-c", help="A run's last.pt (the final epoch, as eval) or best.pt.")] = CheckpointChoice.last,
    input: InputOption = None,
    model_args: ModelArgsOption = None,
):
    """Write a trained network to a file other tools open.

    The graph takes a batch of normalised images at the trained size (any batch size); the
    file's cnnlab metadata gives the input size, class names, and the mean and std to normalise
    with. ONNX opens in Netron and runs in onnxruntime.

    Examples:
    cnnlab export runs/lenet-digits-20250101-120000 --out lenet.onnx
    cnnlab export runs/lenet-digits-20250101-120000 --out lenet.pt2 --checkpoint best
    cnnlab export resnet18 --input 64 --out resnet18.pt
    """
    from cnnlab.export import export_format, export_model

    from cnnlab.summary import parse_input_size

    export_format(out)  # a bad extension fails before any work
    written = export_model(target, out, checkpoint=checkpoint.value, model_args=model_args,
                           input_size=parse_input_size(input) if input is not None else None)
    typer.echo(f"wrote {written}", err=True)


# -- cnnlab experiment: the classic experiments (cnnlab/experiments.py); train options pass through --

def experiment(ctx: typer.Context, name: Optional[str] = None, **options):
    """Run a classic experiment end to end.

    Writes <runs-dir>/<name>-<time>/: its runs, results.csv, the figures and report.md with the
    finding. Any train option (e.g. --lr, --batch-size) reaches every run. Ctrl-C keeps the
    finished runs; continue with --resume DIR.

    Examples:
    cnnlab experiment --list
    cnnlab experiment permuted-pixels --epochs 5
    cnnlab experiment depth --depths 20,56 --seeds 3
    """
    from cnnlab.errors import UsageError
    from cnnlab.experiments import describe_experiments, resume_experiment, run_experiment
    from cnnlab.render import output_format, rows_as, show

    options = {key: getattr(value, "value", value) for key, value in options.items() if is_given(ctx, key)}
    listing, resume_from = options.pop("list", False), options.pop("resume", None)
    config_file = options.pop("config", None)
    if config_file is not None:  # the experiment names its runs and picks their models itself
        from_file = options_from_file(config_file, options)
        left_out = [key for key in ("model", "name") if from_file.pop(key, None) is not None]
        if left_out:
            typer.echo(f"note: {config_file}'s {' and '.join(left_out)} left out: the experiment chooses "
                       f"its runs' models and names", err=True)
        options = {**from_file, **options}
    if listing:
        show(rows_as(describe_experiments(), output_format(None), prose=("description",)))
        return
    if "depths" in options:
        options["depths"] = parse_depths(options["depths"])
    settings = {key: options.pop(key) for key in ("data", "epochs", "seeds", "runs_dir", "depths") if key in options}
    if resume_from is not None:  # the interrupted command, --resume DIR added
        settings.pop("runs_dir", None)
        result = resume_experiment(resume_from, name, options=options, **settings)
    elif name is None:
        raise UsageError("give the experiment to run (see 'cnnlab experiment --list'), or --resume DIR")
    else:
        result = run_experiment(name, options=options, **settings)
    typer.echo(result.finding)
    typer.echo(f"wrote {', '.join(str(path) for path in result.files)}", err=True)


def parse_depths(text: str) -> list[int]:
    from cnnlab.errors import UsageError

    try:
        return [int(depth) for depth in text.split(",")]
    except ValueError:
        raise UsageError(f"--depths takes depths separated by commas, e.g. 20,56; not {text!r}") from None


def build_experiment_command() -> None:
    """Register ``experiment``: its own options, then every other TrainConfig field as in train."""
    own = [
        ("name", Annotated[Optional[str], typer.Argument(
            show_default=False, metavar="NAME", help="permuted-pixels, depth, one-by-one or attention.",
            autocompletion=complete_experiment)], None),
        ("list", Annotated[bool, typer.Option("--list", help="Describe each experiment.")], False),
        ("epochs", Annotated[int, typer.Option("--epochs", "-e", min=1, help="Epochs of every run.")], 5),
        ("seeds", Annotated[int, typer.Option(min=1, max=100, help="Repeat each run with N seeds; report "
                                              "mean ± spread.")], 1),
        ("depths", Annotated[Optional[str], typer.Option(
            show_default=False, metavar="N,N,...",
            help="depth: the depths (20, 32, 44, 56, 110; default 20,56).")], None),
        ("resume", Annotated[Optional[Path], typer.Option(
            show_default=False, metavar="DIR", help="Continue the interrupted experiment in DIR.")], None),
        ("config", ConfigOption, None),
    ]
    parameters = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        *[inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY if key != "name" else
                            inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)
          for key, annotation, default in own],
        *config_parameters(leave_out=("model", "epochs", "name")),
    ]
    register(experiment, parameters)


build_experiment_command()


def main() -> None:
    app()
