"""Networks from the user's own files (cnnlab/models/user.py): every command on FILE.py:Name,
the options from its signature, the run's record of its source, and one line for each way a
reference can be wrong. The networks are written here, not taken from the zoo."""

import json
import textwrap

import pytest
import torch
from test_receptive import computed_region, influence_regions, narrow_copy, row
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app
from cnnlab.errors import BadModelOption, InputTooSmall, UnknownModel, UsageError
from cnnlab.models import create_model, model_options, model_spec, recorded_model
from cnnlab.summary import summarize

runner = CliRunner()

SEPARABLE = '''
import torch
from torch import nn


class SeparableBlock(nn.Module):
    """A depthwise 3x3 (one filter per channel), then a pointwise 1x1 that mixes channels."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x):
        return torch.relu(self.norm(self.pointwise(self.depthwise(x))))


class TinySeparable(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 1):
        super().__init__()
        c = 16 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
            SeparableBlock(c, 2 * c, stride=2), SeparableBlock(2 * c, 2 * c),
            nn.MaxPool2d(2), SeparableBlock(2 * c, 4 * c),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def tiny(width: int = 1):
    """A factory: the network at a width."""
    return TinySeparable(width=width)
'''

GATED = '''
from torch import nn


class Gated(nn.Module):
    """Chooses a branch by the data: torch.fx cannot trace that."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.up, self.down = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

    def forward(self, x):
        x = self.conv(x)
        x = self.up(x) if x.mean() > 0 else self.down(x)
        return self.head(x)
'''


@pytest.fixture
def separable(tmp_path):
    path = tmp_path / "my_nets.py"
    path.write_text(SEPARABLE)
    return path


def test_summary_params_equal_the_models_own_count(separable):
    reference = f"{separable}:TinySeparable"
    model = create_model(reference)
    summary = summarize(reference)
    assert summary.totals.params == sum(p.numel() for p in model.parameters())
    assert summary.input_size == (1, 28, 28) and summary.warnings == []
    assert model_spec(reference).family == "user"


def test_receptive_fields_equal_the_gradient_probe(separable):
    reference, input_size = f"{separable}:TinySeparable", (1, 32, 32)
    record = row(summarize(reference, input_size=input_size), "features")
    out_h, out_w = record.output_shape[1:]
    units = [(0, out_w - 1), (out_h // 2, out_w // 2), (out_h - 1, 0)]
    measured, shape = influence_regions(narrow_copy(reference), "features", input_size, units)
    assert shape == (out_h, out_w)
    assert measured == [(computed_region(record, 0, h, 32), computed_region(record, 1, w, 32)) for h, w in units]
    assert record.rf_size == (19, 19)  # 3, then 3/2 (+2), 3 (+4), pool 2 (+4), 3 (+8): 1+2+4+4+8


def test_a_data_dependent_model_gets_the_hook_summary_and_a_note(tmp_path):
    (tmp_path / "gated.py").write_text(GATED)
    result = runner.invoke(app, ["summary", f"{tmp_path / 'gated.py'}:Gated"])
    assert result.exit_code == 0, result.output
    assert "torch.fx cannot trace" in result.output and "RF, Jump and Start" in result.output
    summary = summarize(f"{tmp_path / 'gated.py'}:Gated")
    model = create_model(f"{tmp_path / 'gated.py'}:Gated")
    assert summary.totals.params == sum(p.numel() for p in model.parameters())
    assert all(r.rf_status == "unavailable" for r in summary.layers)


def test_a_factory_takes_its_options_typed_from_its_signature(separable):
    reference = f"{separable}:tiny"
    options = model_options(reference, ["width=2"])
    assert options == {"width": 2}
    wide, narrow = create_model(reference, **options), create_model(reference)
    assert wide.features[0].out_channels == 32 and narrow.features[0].out_channels == 16
    with pytest.raises(BadModelOption, match="option width takes an integer; got '1.5'"):
        model_options(reference, ["width=1.5"])
    listing = runner.invoke(app, ["models", reference])
    assert listing.exit_code == 0 and "width" in listing.output and "int" in listing.output


def test_data_a_model_cannot_take_is_named(separable):
    # the factory takes neither in_channels nor num_classes: the data must match it
    with pytest.raises(BadModelOption, match="takes 1 input channel.* but the data have 3"):
        create_model(f"{separable}:tiny", in_channels=3, num_classes=10)
    with pytest.raises(BadModelOption, match="ends in 10 outputs but the data have 26 classes"):
        create_model(f"{separable}:tiny", in_channels=1, num_classes=26)


@pytest.mark.parametrize("source, name, error, message", [
    (None, "missing.py:Net", UnknownModel, "no file .*missing.py"),
    ("x = 1\n", "notes.txt:Net", UsageError, "is not a Python file"),
    ("import torch\n", "m.py:Net", UnknownModel, "m.py has no 'Net'"),
    ("Net = 3\n", "m.py:Net", BadModelOption, "Net in .*m.py is a int, not an nn.Module subclass or a function"),
    ("def Net():\n    return [1]\n", "m.py:Net", BadModelOption, r"Net\(\) returned a list, not an nn.Module"),
    ("from torch import nn\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
     "        raise ValueError('depth must be even')\n", "m.py:Net", BadModelOption,
     r"Net\(\) raised ValueError: depth must be even"),
    ("def Net(:\n    pass\n", "m.py:Net", UsageError, r"m.py, line 1: "),
])
def test_each_bad_reference_is_one_line_and_writes_nothing(tmp_path, source, name, error, message):
    file = tmp_path / name.partition(":")[0]
    if source is not None:
        file.write_text(source)
    reference = f"{tmp_path}/{name}"
    with pytest.raises(error, match=message) as raised:
        summarize(reference)
    assert "\n" not in str(raised.value)
    result = runner.invoke(app, ["train", reference, "--runs-dir", str(tmp_path / "runs"), "--epochs", "1"])
    assert result.exit_code != 0 and result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert not (tmp_path / "runs").exists()


def test_an_input_the_forward_cannot_take_names_the_smallest_that_works(tmp_path):
    (tmp_path / "fixed.py").write_text(textwrap.dedent('''
        from torch import nn
        def Net(in_channels: int = 1, num_classes: int = 10):
            return nn.Sequential(nn.Conv2d(in_channels, 4, 5), nn.MaxPool2d(2), nn.Conv2d(4, 4, 5),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
    '''))
    with pytest.raises(InputTooSmall, match="the smallest input that works is 1×14×14"):
        summarize(f"{tmp_path / 'fixed.py'}:Net", input_size=(8, 8))


def test_a_package_module_reference_works(tmp_path, monkeypatch):
    package = tmp_path / "mypackage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(SEPARABLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert summarize("mypackage.nets:TinySeparable").totals.params == \
        summarize(f"{package / 'nets.py'}:TinySeparable").totals.params


def test_runs_recorded_as_alexnet_before_the_rename_rebuild_torchvisions_variant():
    with torch.device("meta"):
        old = create_model("alexnet_tv", in_channels=1, num_classes=10).state_dict()
        new = create_model("alexnet", in_channels=1, num_classes=10).state_dict()
    assert recorded_model("alexnet", old) == "alexnet_tv"
    assert recorded_model("alexnet", new) == "alexnet"
    assert recorded_model("alexnet_2012", old) == "alexnet_2012"


@pytest.mark.slow
def test_a_user_network_trains_evaluates_shows_and_notices_an_edited_file(separable, tmp_path):
    reference = f"{separable}:TinySeparable"
    run = cnnlab.train(cnnlab.TrainConfig(model=reference, runs_dir=str(tmp_path / "runs")), progress="none")
    config = json.loads((run.path / "config.json").read_text())
    assert config["recipe"] == "batchnorm"  # it has batch normalisation, as the zoo's ResNets
    assert config["model"] == reference and config["model_source"]["reference"] == reference
    assert (run.path / "model_source.py").read_text() == SEPARABLE
    import hashlib
    assert config["model_source"]["sha256"] == hashlib.sha256(SEPARABLE.encode()).hexdigest()
    result = cnnlab.evaluate(run.path, write=False)
    assert result.top1 >= 0.90, result.top1
    shown = runner.invoke(app, ["show", "filters", str(run.path)])
    assert shown.exit_code == 0, shown.output

    separable.write_text(SEPARABLE.replace("c = 16 * width", "c = 8 * width"))
    with pytest.raises(UsageError, match="has changed since the run was trained; choose with --model-source"):
        cnnlab.evaluate(run.path, write=False)
    assert cnnlab.evaluate(run.path, write=False, model_source="run").top1 == result.top1
    separable.unlink()
    moved = runner.invoke(app, ["eval", str(run.path)])
    assert moved.exit_code != 0 and "has moved or gone" in moved.output


@pytest.mark.parametrize("recorded", [
    None,                                                   # config.json edited: no source record at all
    dict(reference="x", file="model_source.py", sha256=""),  # a relative path: the run's copy from inside it
    dict(reference="x", file="{run}/model_source.py", sha256=""),  # the run's own copy, named absolutely
    dict(reference="x", file="{run}/../run/./model_source.py", sha256=""),
])
def test_a_received_run_never_names_its_own_code_into_an_import(tmp_path, monkeypatch, recorded):
    """A run directory from elsewhere whose record points the model at code inside the run (or
    records no source) is one line: only --model-source run imports the run's copy."""
    from cnnlab.models import rebuild_reference

    run = tmp_path / "run"
    run.mkdir()
    (run / "model_source.py").write_text("raise SystemExit('the run ran its own code')\n")
    monkeypatch.chdir(run)
    if recorded is not None:
        recorded = {**recorded, "file": recorded["file"].format(run=run)}
        recorded["sha256"] = __import__("hashlib").sha256((run / "model_source.py").read_bytes()).hexdigest()
    for model in ("model_source.py:Net", f"{run}/model_source.py:Net"):
        with pytest.raises(UsageError, match="records no source|the run's own code"):
            rebuild_reference(model, recorded, run)
    assert rebuild_reference("model_source.py:Net", recorded or {"file": "x"}, run, "run") == \
        f"{(run / 'model_source.py').resolve()}:Net"  # asked for explicitly
