"""Training options from a file, and the resolved options written back as one.

    cnnlab train --config recipe.toml --lr 0.01      # the file, then the command line on top
    cnnlab train --config runs/lenet-digits-X/       # a new run with that run's resolved options
    cnnlab train lenet --print-config > lenet.toml   # every option, the recipe's filled in

A file is TOML (``.toml``) or JSON (anything else). Its keys are option names, with dashes or
underscores (``batch-size``, ``batch_size``, ``model-arg``); each value is checked as the
command line checks it, and an unknown key is one line with the nearest option's name.

A run (its directory, or its config.json) is read as a run record: its options are the ones it
trained with, every recipe value resolved, so a new run from them trains the same way. The
record's other keys (created, versions, model_stats ...) and the run's name are left out: the
new run gets a name of its own. A JSON file is a run record when it has keys of the record
beyond the options (``set_by_recipe``, ``created`` ...).

torch-free, like cnnlab.config.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import fields
from pathlib import Path
from typing import get_type_hints

from cnnlab.config import TrainConfig, flag_name, has_type, option_fields, type_name
from cnnlab.errors import UsageError, first_line

NOT_COPIED_FROM_A_RUN = ("name",)  # a new run is named afresh


def option_aliases() -> dict[str, str]:
    """Every key a file may use -> the option's field name: the field (``batch_size``), its
    command-line spelling (``batch-size``) and its flag's (``model-arg`` for model_args)."""
    aliases = {}
    for f in option_fields():
        flag = (f.metadata["flag"] or flag_name(f.name)).split("/")[0].removeprefix("--")
        for alias in (f.name, f.name.replace("_", "-"), flag, flag.replace("-", "_")):
            aliases[alias] = f.name
    return aliases


def read_options(path) -> dict:
    """The options a config file (TOML or JSON) or a run (its directory or config.json) gives,
    by field name, each value type-checked and within its bounds. A bad file is a UsageError
    naming the file and the key."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"{path} is a directory but not a run (it has no config.json)")
        return _run_options(path / "config.json")
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    saved = _parse(path)
    if not isinstance(saved, dict):
        raise UsageError(f"{path} holds {type(saved).__name__}, not a table of options")
    record_keys = _record_keys()
    if path.suffix.lower() != ".toml" and any(key in record_keys for key in saved):
        return _run_options(path)
    return _checked(saved, path)


def config_from_file(path, **overrides) -> TrainConfig:
    """The TrainConfig a file gives with ``overrides`` on top: what ``cnnlab train --config
    FILE`` trains (``cnnlab.train(cnnlab.config_from_file("lenet.toml", lr=0.01))``)."""
    config = TrainConfig(**{**read_options(path), **overrides})
    config.validate()
    return config


def _parse(path: Path):
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise UsageError(f"{path} is not valid TOML: {first_line(error)}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})") from None


def _record_keys() -> set[str]:
    from cnnlab.runs.record import RunRecord

    return {f.name for f in fields(RunRecord) if f.name != "options"}


def _run_options(config_json: Path) -> dict:
    """A run record's options (checked as a run is when it is read), less its name."""
    from cnnlab.errors import CnnlabError
    from cnnlab.runs.record import RunRecord

    saved = _parse(config_json)
    try:
        record = RunRecord.from_json(saved, str(config_json))
    except CnnlabError as error:
        raise UsageError(str(error)) from None
    return {name: value for name, value in record.options.to_dict().items() if name not in NOT_COPIED_FROM_A_RUN}


def _checked(saved: dict, path: Path) -> dict:
    """``saved``'s keys as field names, every value of the field's type and within its bounds."""
    aliases, hints = option_aliases(), get_type_hints(TrainConfig)
    options = {}
    for key, value in saved.items():
        name = aliases.get(str(key))
        if name is None:
            nearest = difflib.get_close_matches(str(key), list(aliases), n=1)
            hint = f" (did you mean {nearest[0]!r}?)" if nearest else " (see 'cnnlab train --help')"
            raise UsageError(f"{path}: unknown option {key!r}{hint}")
        if name in options:
            raise UsageError(f"{path}: {key!r} gives {name} a second time")
        if isinstance(value, float) and not math.isfinite(value) or not has_type(value, hints[name]):
            raise UsageError(f"{path}: {key} is {value!r}, not {type_name(hints[name])}")
        options[name] = value
    try:
        TrainConfig(**options).validate()  # bounds and combinations, as on the command line
    except UsageError as error:
        raise UsageError(f"{path}: {error}") from None
    return options


def options_toml(config: TrainConfig) -> str:
    """``config`` as a TOML file that ``read_options`` reads back to the same options; an
    option left unset (None: off, or decided by the data or the model) is a comment saying so."""
    lines = [f"# cnnlab train --config FILE: every training option of {config.model}"]
    for f in option_fields():
        value = getattr(config, f.name)
        lines.append(f"# {f.name}: not set" if value is None
                     else f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string
