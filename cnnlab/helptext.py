"""Command help that reads at 80 columns.

Typer's own layout gives every option five columns (long name, short name, negative name,
type, help); with cnnlab's long names that left ``train --help`` a help column 22 characters
wide, cut names and split choice lists. Here each option is one line of names (``--flip /
--no-flip``, the metavar or the choices ``[sgd|adam|adamw]``) beside its help, or above it when
the names are too long; the help is a paragraph that wraps as a whole. A docstring's paragraphs
are joined into flowing text whatever their line breaks in the source, except a paragraph that
starts with ``Examples:``, whose lines are commands and stay one to a line.

Options sit in the panel their ``rich_help_panel`` names (``Options`` without one), panels in
the order their first option is declared. Colours go through click, which drops them in a pipe.
Typer keeps its click private; a parameter's type is read from its annotation.
"""

from __future__ import annotations

import inspect
import io
import shutil
from enum import Enum
from pathlib import Path
from typing import get_args

import typer
import typer.core

NAMES_WIDTH = 28  # names longer than this go on a line of their own, the help below them
MAX_WIDTH = 100  # a wider terminal still gets lines a person can read
EXAMPLES = "Examples:"


class ReadableCommand(typer.core.TyperCommand):
    """A Typer command whose --help is laid out by ``render_help``."""

    def format_help(self, ctx, formatter) -> None:
        formatter.write(render_help(self, ctx, help_width(ctx)))


class ReadableGroup(typer.core.TyperGroup):
    """The Typer app's group, its --help laid out as its commands' (with a Commands panel)."""

    def format_help(self, ctx, formatter) -> None:
        formatter.write(render_help(self, ctx, help_width(ctx)))

    def parse_args(self, ctx, args):
        # Typer's own layout prints the help while building it, so its no-arguments error prints
        # nothing more; this layout returns the help as text, so it is printed here
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            typer.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(2)
        return super().parse_args(ctx, args)


def help_width(ctx) -> int:
    """The terminal's width (click's ``terminal_width`` when set, else $COLUMNS or the terminal
    itself), at most MAX_WIDTH."""
    width = ctx.terminal_width or shutil.get_terminal_size((80, 24)).columns
    return max(40, min(width, MAX_WIDTH))


def paragraphs(help: str) -> list[tuple[str, str]]:
    """A docstring as (kind, text) pairs: ("text", one flowing paragraph) or ("examples", the
    example commands, one per line)."""
    text = inspect.cleandoc(help or "").partition("\f")[0]
    parts = []
    for paragraph in (p.strip() for p in text.split("\n\n")):
        if paragraph.startswith(EXAMPLES):
            lines = [line.strip() for line in paragraph[len(EXAMPLES):].splitlines()]
            parts.append(("examples", "\n".join(line for line in lines if line)))
        elif paragraph:
            parts.append(("text", " ".join(line.strip() for line in paragraph.splitlines())))
    return parts


def option_names(param) -> str:
    """``--epochs, -e N``, ``--flip / --no-flip``, ``--optimizer [sgd|adam|adamw]``, ``MODEL``."""
    if param.param_type_name == "argument":
        return param.metavar or param.name.upper()
    long_first = sorted(param.opts, key=lambda name: not name.startswith("--"))
    names = ", ".join(long_first)
    if param.secondary_opts:
        names += " / " + ", ".join(param.secondary_opts)
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return names
    kind = value_type(param)
    if isinstance(kind, type) and issubclass(kind, Enum):
        return f"{names} [{'|'.join(member.value for member in kind)}]"
    return f"{names} {param.metavar or {int: 'N', float: 'X', Path: 'PATH'}.get(kind, 'TEXT')}"


def value_type(param):
    """The type of one value of ``param``: its annotation less Optional and list."""
    kind = param.type_descriptor.annotation
    while get_args(kind):
        kind = next(t for t in get_args(kind) if t is not type(None))
    return kind


def arguments(command) -> list:
    return [param for param in command.params if param.param_type_name == "argument"]


def argument_usage(param) -> str:
    """``MODEL``, ``[MODEL]`` (optional) or ``RUNS...`` (several)."""
    name = (param.metavar or param.name.upper()) + ("..." if param.nargs != 1 else "")
    return name if param.required else f"[{name}]"


def option_help(param) -> str:
    """The help with the default and the bounds a reader needs, as one paragraph."""
    text = " ".join((getattr(param, "help", None) or "").split())
    extras = []
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None or high is not None:
        extras.append(f"{low} to {high}" if low is not None and high is not None
                      else f"at least {low}" if low is not None else f"at most {high}")
    if getattr(param, "show_default", False) and param.default not in (None, False, ()) \
            and param.param_type_name != "argument":
        default = getattr(param.default, "value", param.default)
        extras.append(f"default: {default}")
    if param.required:
        extras.append("required")
    return " ".join([text, *(f"[{extra}]" for extra in extras)]).strip()


def panels(command, ctx) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        default_panel = "Arguments" if param.param_type_name == "argument" else "Options"
        grouped.setdefault(getattr(param, "rich_help_panel", None) or default_panel, []).append(param)
    if "Options" in grouped:  # --help and the options of no panel come last
        grouped["Options"] = grouped.pop("Options")
    return grouped


def render_help(command, ctx, width: int) -> str:
    """The whole --help of ``command`` as text (with colour codes, which click drops in a pipe)."""
    from rich.console import Console, Group
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    screen = Console(file=io.StringIO(), width=width, force_terminal=True, color_system="standard",
                     highlight=False, emoji=False)
    subcommands = getattr(command, "commands", None)  # a group's, by name
    usage = " ".join([ctx.command_path, "[OPTIONS]", *map(argument_usage, arguments(command)),
                      *(["COMMAND [ARGS]..."] if subcommands else [])])
    pieces = [Padding(Text(f"Usage: {usage}", style="bold"), (1, 1, 0, 1))]
    for index, (kind, text) in enumerate(paragraphs(command.help)):
        if kind == "examples":
            pieces.append(Padding(Text(EXAMPLES, style="bold"), (1, 1, 0, 1)))
            pieces += [Padding(Text(line, style="cyan"), (0, 1, 0, 3)) for line in text.splitlines()]
        else:
            pieces.append(Padding(Text(text, style="bold" if index == 0 else ""), (1, 1, 0, 1)))
    pieces.append(Text(""))
    grouped = panels(command, ctx)
    rows_of = {title: [(option_names(p), option_help(p)) for p in params] for title, params in grouped.items()}
    if subcommands:
        rows_of["Commands"] = [(name, paragraphs(sub.help)[0][1] if sub.help else "")
                               for name, sub in subcommands.items() if not sub.hidden]
    names_width = max((len(names) for rows in rows_of.values() for names, _ in rows if len(names) <= NAMES_WIDTH),
                      default=NAMES_WIDTH)
    for title, rows in rows_of.items():
        body = []
        grid = None
        for names, help in rows:
            if len(names) > names_width:
                body.append(Text(names, style="cyan", no_wrap=True))
                names = ""
            if grid is None or names == "":
                grid = Table.grid(padding=(0, 2))
                grid.add_column(width=names_width, no_wrap=True, style="cyan")
                grid.add_column()
                body.append(grid)
            grid.add_row(Text(names), Text(help))  # Text: "[default: 0]" is not rich markup
            if names == "":
                grid = None
        pieces.append(Panel(Group(*body), title=title, title_align="left", border_style="dim"))
    screen.print(Group(*pieces))
    return screen.file.getvalue()
