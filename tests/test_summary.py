"""cnnlab.summary and `cnnlab summary`: counts against torchvision and its published figures,
rendering, and one-line errors for bad input."""

import io
import json

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app
from cnnlab.errors import InputSizeMismatch, InputTooSmall, UsageError
from cnnlab.pretrained import TORCHVISION_TWINS
from cnnlab.summary import parse_input_size, summarize, to_csv, to_json, to_text

runner = CliRunner()

# how torchvision builds the twins' reference (googlenet_tv: torchvision's 3x3 variant, without side heads)
TORCHVISION_ARGS = {"googlenet": dict(aux_logits=False, init_weights=False)}


@pytest.mark.parametrize("name", sorted(TORCHVISION_TWINS))
def test_parameter_counts_match_torchvision(name):
    with torch.device("meta"):  # the count depends on the architecture, not on the weights
        twin = TORCHVISION_TWINS[name]
        reference = sum(p.numel() for p in torchvision.models.get_model(
            twin, weights=None, **TORCHVISION_ARGS.get(twin, {})).parameters())
    summary = summarize(name)
    assert summary.totals.params == reference
    assert sum(r.params for r in summary.rows()) == reference  # every parameter has one row
    assert summary.totals.trainable_params == reference and summary.totals.non_trainable_params == 0


def test_parameter_counts_match_the_design_reference():
    expected = {"alexnet": 62_378_344, "alexnet_tv": 61_100_840, "vgg16": 138_357_544, "resnet50": 25_557_032,
                "densenet121": 7_978_856, "googlenet_tv": 6_624_904}
    assert {name: summarize(name).totals.params for name in expected} == expected


# torchvision's published "GFLOPS", which are multiply-accumulates, to their printed precision:
# zoo name -> (torchvision name, figure)
PUBLISHED_GMACS = {"alexnet_tv": ("alexnet", "0.714"), "vgg16": ("vgg16", "15.47"),
                   "resnet18": ("resnet18", "1.814"), "resnet50": ("resnet50", "4.089"),
                   "densenet121": ("densenet121", "2.834"), "googlenet_tv": ("googlenet", "1.498")}


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_macs_reproduce_torchvision_published_figures(name):
    torchvision_name, published = PUBLISHED_GMACS[name]
    decimals = len(published.split(".")[1])
    for model in (name, f"torchvision:{torchvision_name}"):
        assert f"{summarize(model).totals.macs / 1e9:.{decimals}f}" == published


@pytest.mark.parametrize("name", ["alexnet", "resnet50", "densenet121", "googlenet", "se_resnet18",
                                  "cbam_resnet18", "nin", "lenet"])
def test_macs_equal_half_of_torch_flop_counter(name):
    """torch's FlopCounterMode counts a multiply-accumulate of a convolution or matrix product
    as 2 FLOPs and nothing else, the convention of torchvision's published figures."""
    spec = cnnlab.model_spec(name)
    with torch.device("meta"):
        model = cnnlab.create_model(name).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, *spec.input_size, device="meta"))
    assert summarize(name).totals.macs == counter.get_total_flops() // 2


def test_shapes_match_a_real_forward_pass():
    model = cnnlab.create_model("googlenet_tv", num_classes=7).eval()
    shapes = {}

    def remember(name):
        def hook(module, args, output):
            shapes.setdefault(name, tuple(output.shape[1:]))  # the first call
        return hook

    hooks = [module.register_forward_hook(remember(name)) for name, module in model.named_modules() if name]
    with torch.no_grad():
        model(torch.zeros(1, 3, 96, 112))
    for hook in hooks:
        hook.remove()
    summary = summarize(model, input_size=(3, 96, 112))
    recorded = {r.name: r.output_shape for r in summary.layers if r.name in shapes}
    assert len(recorded) > 100 and recorded == {name: shapes[name] for name in recorded}
    assert summary.layers[-1].output_shape == (7,)


def test_a_built_model_keeps_its_weights_and_mode():
    model = cnnlab.create_model("lenet").train()
    before = model.features[0].weight.clone()
    summary = summarize(model, input_size=(1, 28, 28))
    assert summary.totals.params == sum(p.numel() for p in model.parameters())
    assert model.training and model.features[0].weight.device.type == "cpu"
    assert torch.equal(model.features[0].weight, before)


def test_a_model_on_the_meta_device_is_summarized_as_it_is():
    with torch.device("meta"):
        model = cnnlab.create_model("resnet18", num_classes=10)
    summary = summarize(model, input_size=(3, 96, 96))
    assert summary.totals == summarize("resnet18", input_size=96, num_classes=10).totals


def test_shared_weights_count_once_and_repeated_calls_get_their_own_rows():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x))

    summary = summarize(Twice(), input_size=(4, 8, 8))
    assert [r.name for r in summary.rows()] == ["conv", "conv:2"]
    assert [r.params for r in summary.rows()] == [4 * 4 * 9 + 4, 0]
    assert [r.macs for r in summary.rows()] == [8 * 8 * 4 * 4 * 9] * 2
    assert summary.rows()[1].rf_size == (5, 5)


def test_depth_shows_containers_that_add_up_their_layers():
    summary = summarize("resnet18")
    top = summary.rows(depth=1)
    assert [r.name for r in top][:3] == ["stem", "layer1", "layer2"]
    for rows in (top, summary.rows(depth=2), summary.rows()):
        assert sum(r.params for r in rows) == summary.totals.params
        assert sum(r.macs for r in rows) == summary.totals.macs
    layer4 = next(r for r in top if r.name == "layer4")
    assert layer4.is_container and layer4.output_shape == (512, 7, 7)


def test_hook_fallback_when_fx_cannot_trace():
    class ShapeBranching(nn.Module):  # branching on a shape defeats symbolic tracing
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 6 * 6, 2))

        def forward(self, x):
            if x.shape[-1] > 4:
                x = self.conv(x)
            return self.head(x)

    summary = summarize(ShapeBranching(), input_size=(3, 8, 8))
    assert [r.name for r in summary.rows()] == ["conv", "head.0", "head.1"]
    assert summary.totals.params == 3 * 8 * 9 + 8 + 288 * 2 + 2
    assert all(r.rf_status == "unavailable" for r in summary.layers)
    assert any("torch.fx cannot trace" in w for w in summary.warnings)


def test_code_that_needs_a_real_batch_is_recorded_on_the_meta_device():
    class Reshaping(nn.Module):  # view(N, -1) is ambiguous for an empty batch
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 6 * 6, 2)

        def forward(self, x):
            x = self.conv(x)
            return self.fc(x.view(x.size(0), -1))

    summary = summarize(Reshaping(), input_size=(1, 8, 8))
    assert [(r.name, r.output_shape, r.params) for r in summary.rows()] == [
        ("conv", (4, 6, 6), 40), ("view", (144,), 0), ("fc", (2,), 290)]
    assert summary.rows()[0].rf_size == (3, 3) and summary.rows()[1].rf_status == "global"


def test_building_without_initialization_leaves_torch_init_as_it_was():
    initializers = dict(vars(nn.init))
    summarize("resnet18")
    assert dict(vars(nn.init)) == initializers


def test_input_too_small_names_the_layer_and_the_smallest_size_that_works():
    with pytest.raises(InputTooSmall, match=r"features\.30 \(MaxPool2d\) receives a 512×1×1 map.*3×32×32$"):
        summarize("torchvision:vgg16", input_size=(3, 16, 16))
    summarize("torchvision:vgg16", input_size=32)  # and it does work
    with pytest.raises(InputTooSmall, match=r"smallest input that works is 3×32×100$"):
        summarize("vgg16", input_size=(16, 100))


def test_a_fixed_size_model_points_to_its_natural_input():
    with pytest.raises(InputSizeMismatch, match=r"classifier\.1 \(Linear\).*natural input 1×28×28$"):
        summarize("lenet", input_size=32)


def test_input_sizes_parse_and_fill_in_channels():
    assert parse_input_size("3x224x224") == (3, 224, 224)
    assert parse_input_size("64×48") == (64, 48) and parse_input_size("32") == (32,)
    for bad in ("", "3x", "0x5", "-3", "a", "1x2x3x4", "2.5"):
        with pytest.raises(UsageError):
            parse_input_size(bad)
    assert summarize("vgg16", input_size=(64, 48)).input_size == (3, 64, 48)
    assert summarize("lenet", in_channels=3).input_size == (3, 28, 28)
    with pytest.raises(UsageError):
        summarize(nn.Conv2d(1, 1, 1))  # a built model needs an explicit size


def test_csv_has_one_row_per_layer_and_parses_with_pandas():
    summary = summarize("resnet18", num_classes=10)
    for depth in (None, 1, 2):
        frame = pd.read_csv(io.StringIO(to_csv(summary, depth)))
        assert len(frame) == len(summary.rows(depth))
        assert frame["params"].sum() == summary.totals.params
        assert frame["macs"].sum() == summary.totals.macs
    frame = pd.read_csv(io.StringIO(to_csv(summary)))
    layer4_conv = frame[frame["name"] == "layer4.1.branch.3"].iloc[0]
    assert (layer4_conv["rf_size_h"], layer4_conv["rf_jump_w"], layer4_conv["rf_start_h"]) == (435, 32, 0)
    assert frame.iloc[-1]["output_shape"] == "10" and frame.iloc[-1]["rf_status"] == "global"


def test_json_carries_rows_totals_and_warnings():
    document = json.loads(to_json(summarize("alexnet_tv"), depth=1))
    assert document["totals"]["params"] == 61_100_840
    assert document["input_size"] == [3, 224, 224] and document["warnings"] == []
    assert [layer["name"] for layer in document["layers"]] == ["features", "pool", "classifier"]


# ----------------------------------------------------------------------------------------- CLI


def test_cli_explains_the_lecture_arithmetic_of_the_papers_alexnet():
    """The seeds' AlexNet: 96 kernels of 11x11/4 on 227x227, (227 - 11)/4 + 1 = 55."""
    result = runner.invoke(app, ["summary", "alexnet", "--explain"])
    assert result.exit_code == 0, result.output
    assert "(227 − 11)/4 + 1 = 55" in result.output
    assert "11·11·3·96 + 96 = 34,944" in result.output
    assert "96×55×55" in result.output and "62,378,344" in result.output
    first_conv = summarize("alexnet").layers[1]
    assert first_conv.output_shape == (96, 55, 55) and first_conv.params == 34_944


def test_cli_table_with_explain_shows_the_arithmetic():
    result = runner.invoke(app, ["summary", "alexnet_tv", "--explain"])
    assert result.exit_code == 0, result.output
    assert "(224 − 11 + 2·2)/4 + 1 = 55" in result.output       # output size of conv1
    assert "11·11·3·64 + 64 = 23,296" in result.output          # its parameters
    assert "55·55·64·11·11·3 = 70,276,800" in result.output     # its MACs
    assert "(55 − 3)/2 + 1 = 27" in result.output               # output size of pool1
    assert "61,100,840" in result.output and "0.714 G" in result.output


def test_cli_csv_depth_and_out_file(tmp_path):
    out = tmp_path / "summary.csv"
    result = runner.invoke(app, ["summary", "vgg16", "--input", "3x64x64", "--classes", "10",
                                 "--depth", "1", "--format", "csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert list(frame["name"]) == ["features", "pool", "classifier"]
    assert frame.iloc[0]["output_shape"] == "512x2x2" and frame.iloc[-1]["output_shape"] == "10"


def test_cli_table_to_file_and_json(tmp_path):
    out = tmp_path / "table.txt"
    assert runner.invoke(app, ["summary", "lenet", "-o", str(out)]).exit_code == 0
    text = out.read_text()
    assert "features.3" in text and "16" in text and "61,706" in text
    result = runner.invoke(app, ["summary", "lenet", "--format", "json"])
    assert json.loads(result.output)["totals"]["macs"] == 416_520


@pytest.mark.parametrize("args, code, message", [
    (["summary", "vggg16"], 1, "error: unknown model 'vggg16'; did you mean vgg16"),
    (["summary", "vgg16", "--input", "16"], 1, "error: input 3×16×16 is too small for vgg16"),
    (["summary", "lenet", "--input", "64"], 1, "error: input 1×64×64 does not fit lenet"),
    (["summary", "vgg16", "--input", "3x"], 2, "error: input size must be CxHxW"),
    (["summary", "vgg16", "--input", "0"], 2, "error: input size must be CxHxW"),
])
def test_cli_bad_input_is_one_line_and_non_zero(args, code, message):
    result = runner.invoke(app, args)
    assert result.exit_code == code
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_rejects_a_non_positive_depth():
    result = runner.invoke(app, ["summary", "vgg16", "--depth", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_flat_api_exposes_summarize():
    assert cnnlab.summarize is summarize
    text = to_text(cnnlab.summarize("lenet"), depth=1)
    assert "Params: 61,706" in text
