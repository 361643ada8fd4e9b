"""What a person reads in an 80-column terminal: tables keep their names whole and never cut a
number (each is checked against the same command's --format csv), a pipe keeps every column,
and --help keeps option names and choice lists whole, reads as paragraphs and ends with examples.

The terminal is rich's TTY_COMPATIBLE with COLUMNS, and click's terminal_width for --help."""

import csv
import io
import re

import pytest
from typer.testing import CliRunner

from cnnlab.cli import app
from synthetic_runs import make_run

WIDTH = 80
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def on_terminal(*args, width=WIDTH, fits=True) -> str:
    result = CliRunner().invoke(app, list(map(str, args)), terminal_width=width,
                                env={"COLUMNS": str(width), "TTY_COMPATIBLE": "1", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    text = ANSI.sub("", result.stdout)
    too_wide = [line for line in text.splitlines() if len(line.rstrip()) > width]
    assert not (fits and too_wide), too_wide
    return text


def piped(*args) -> str:
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result.stdout


def csv_rows(*args) -> list[dict]:
    return list(csv.DictReader(io.StringIO(piped(*args, "--format", "csv"))))


def cells(line: str) -> list[str]:
    """A table line's cells: the text between column rules or runs of spaces."""
    return [cell.strip() for cell in re.split(r"[│┃]|\s{2,}", line) if cell.strip()]


def line_of(text: str, name: str) -> str:
    """The one table line with a cell that is ``name``, whole."""
    found = [line for line in text.splitlines() if name in cells(line)]
    assert len(found) == 1, f"{name!r} is not one whole cell in:\n{text}"
    return found[0]


def test_summary_vgg16_keeps_every_layer_name_and_number_whole():
    text = on_terminal("summary", "vgg16")
    for row in csv_rows("summary", "vgg16"):
        line = line_of(text, row["name"])
        assert f"{int(row['params']):,}" in cells(line), line
        assert f"{int(row['macs']):,}" in cells(line), line
        assert row["output_shape"].replace("x", "×") in cells(line), line
    assert "Start, Jump, Type left out at 80 columns; --wide shows every column" in text
    assert "Params: 138,357,544" in text  # torchvision's count, in the totals under the table


def test_a_pipe_and_wide_keep_every_summary_column():
    for text in (piped("summary", "vgg16"), on_terminal("summary", "vgg16", "--wide", fits=False)):
        header = next(line for line in text.splitlines() if line.startswith("Layer"))
        assert cells(header) == ["Layer", "Type", "Output", "Params", "MACs", "RF", "Jump", "Start"]
        assert "left out" not in text


def test_summary_explain_wraps_its_formulas_within_80_columns():
    text = on_terminal("summary", "vgg16", "--explain")
    assert "params: 3·3·512·512 + 512 = 2,359,808" in text


def test_models_keeps_every_name_and_parameter_count_whole():
    text = on_terminal("models")
    rows = csv_rows("models")
    assert len(rows) > 40
    for row in rows:
        line = line_of(text, row["name"])
        assert f"{int(row['params']):,}" in cells(line), line
    assert "left out at 80 columns" in text


def test_compare_keeps_every_run_name_and_accuracy_whole(tmp_path):
    runs_dir = tmp_path / "runs"
    names = ["lenet-digits-20261204-101010", "alexnet-fashion-mnist-20261204-111111",
             "resnet18-cifar10-20261204-121212-with-a-long-name"]
    make_run(runs_dir, names[0])
    make_run(runs_dir, names[1], model="alexnet", data="fashion-mnist", epochs=10, finished=4, ceiling=0.9)
    make_run(runs_dir, names[2], model="resnet18", data="cifar10", ceiling=0.7)
    text = on_terminal("compare", "--runs-dir", runs_dir)
    for row in csv_rows("compare", "--runs-dir", runs_dir):
        line = line_of(text, row["name"])
        assert f"{100 * float(row['best_val_acc']):.2f}%" in line.split(), line
    assert "--wide shows every column" in " ".join(text.split())  # the note may wrap
    wide = piped("compare", "--runs-dir", runs_dir)
    assert all(heading in wide for heading in ("images/s", "s/epoch", "MACs", "params")) and "left out" not in wide


def test_train_help_reads_at_80_columns():
    from typer.main import get_command

    text = on_terminal("train", "--help")
    words = set(re.findall(r"--?[a-z][a-z0-9-]*", text))
    train = get_command(app).commands["train"]
    for param in train.params:
        assert set(param.opts) | set(param.secondary_opts) <= words | {param.name}, param.opts
    # each choice list is whole on one line
    for choices in ("[constant|step|cosine|onecycle]", "[sgd|adam|adamw]", "[auto|off|bf16|fp16]"):
        assert choices in text
    # paragraphs flow: the docstring's line breaks do not reach the screen mid-sentence
    assert "continue with --resume runs/<name>." in " ".join(text.split())
    assert "with --resume\n" not in text
    examples = text.split("Examples:")[1].split("╭")[0]
    assert 2 <= len([line for line in examples.splitlines() if line.strip().startswith("cnnlab train")]) <= 3
    # --model-arg sits with the model
    model_panel = text.split("─ Model ─")[1].split("╰")[0]
    assert "--model-arg" in model_panel


@pytest.mark.parametrize("command", ["models", "summary", "draw", "eval", "plot", "compare", "show", "experiment",
                                     "export"])
def test_every_command_help_ends_with_examples(command):
    text = on_terminal(command, "--help")
    examples = text.split("Examples:")[1].split("╭")[0]
    assert 2 <= len([line for line in examples.splitlines() if line.strip().startswith(f"cnnlab {command}")]) <= 3


def test_tables_of_prose_wrap_their_sentences_and_keep_their_names():
    from cnnlab.config import RECIPES
    from cnnlab.experiments import EXPERIMENTS

    recipes = on_terminal("models", "--recipes")
    assert all(any(name in cells(line) for line in recipes.splitlines()) for name in RECIPES)
    assert "left out" not in recipes
    experiments = on_terminal("experiment", "--list")
    assert all(any(name in cells(line) for line in experiments.splitlines()) for name in EXPERIMENTS)


def test_the_app_help_lists_each_command_with_its_first_sentence_whole():
    text = on_terminal("--help")
    lines = " ".join(text.split())
    for command, summary in (("train", "Train a model and record the run under runs/<name>."),
                             ("export", "Write a trained network to a file other tools open.")):
        assert f"{command} {summary}" in lines
    assert "--install-completion" in text
    bare = CliRunner().invoke(app, [], terminal_width=WIDTH, prog_name="cnnlab")  # the same help, exit code 2
    assert bare.exit_code == 2 and "Usage: cnnlab [OPTIONS] COMMAND [ARGS]..." in bare.output


def test_trainings_start_lines_wrap_between_words_at_80_columns(monkeypatch, capsys):
    """The progress bar's lines above it (the run, the recipe, the speed trial) break between
    words at the terminal's width, so that no number or path is split by the terminal."""
    from cnnlab.progress import RichProgress

    monkeypatch.setenv("COLUMNS", str(WIDTH))
    line = ("speed trial: bf16, channels-last (16,626 images/s; bf16, contiguous 11,753; fp32, channels-last "
            "12,910; fp32, contiguous 9,238; give --amp and --channels-last to choose)")
    reporter = RichProgress()
    reporter.start(line)
    reporter.close()
    lines = ANSI.sub("", capsys.readouterr().out).splitlines()
    assert len(lines) > 1 and all(len(text.rstrip()) <= WIDTH for text in lines)
    assert " ".join(text.strip() for text in lines if text.strip()) == line  # every word whole, in order
