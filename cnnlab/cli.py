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


def not_yet(command: str) -> None:
    typer.echo(f"error: 'cnnlab {command}' is not yet implemented", err=True)
    raise typer.Exit(1)


@app.command()
@reports_errors
def models(
    pattern: Annotated[str, typer.Argument(help="Shell-style filter, e.g. 'resnet*'.")] = "*",
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    out: OutOption = None,
):
    """List the model zoo: name, family, year, parameters at the default input, default input."""
    not_yet("models")


@app.command()
@reports_errors
def summary(model: ModelArg):
    """Show every layer's output shape, parameters, MACs and receptive field."""
    not_yet("summary")


@app.command()
@reports_errors
def train(model: ModelArg):
    """Train a model and record the run under runs/."""
    not_yet("train")


@app.command("eval")
@reports_errors
def evaluate(run: Annotated[Path, typer.Argument(help="A run directory or a checkpoint file.")]):
    """Evaluate a trained run on its test set."""
    not_yet("eval")


@app.command()
@reports_errors
def plot(runs: Annotated[list[Path], typer.Argument(help="One or more run directories.")]):
    """Draw loss and accuracy curves of one or more runs."""
    not_yet("plot")


@app.command()
@reports_errors
def compare(runs: Annotated[Optional[list[Path]], typer.Argument(help="Run directories.")] = None):
    """Compare runs side by side: accuracy against parameters, MACs and time."""
    not_yet("compare")


def main() -> None:
    app()
