"""The model zoo against references: torchvision's models, the papers' published figures and the
map sizes the papers print; shapes for every registered model; the registry's errors; and the
``cnnlab models`` command.

Big models are built on the meta device (shapes only, no memory), so the whole zoo is cheap.
"""

import csv
import io
import json

import pytest
import torch
from torch import nn
from torchvision import models as torchvision_models
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.errors import UnknownModel, UsageError
from cnnlab.models import (create_model, describe_models, list_models, model_spec, parameter_count,
                           register_model)
from cnnlab.models.attention import SqueezeExcitation
from cnnlab.models.blocks import AuxOutputs
from cnnlab.models.resnet import BasicBlock, Bottleneck
from cnnlab.pretrained import TORCHVISION_TWINS  # our name -> torchvision's, for every model both have

# torchvision's documented parameter counts (the "Params" column of its models' documentation),
# independent of the installed version
PUBLISHED_TORCHVISION_PARAMS = {
    "alexnet_tv": 61_100_840, "vgg11": 132_863_336, "vgg16": 138_357_544, "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240, "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet152": 60_192_808, "densenet121": 7_978_856, "densenet169": 14_149_480,
    "googlenet_tv": 6_624_904,
}


def build_meta(name, **kwargs):
    with torch.device("meta"):
        return create_model(name, **kwargs)


def build_torchvision_meta(name, **kwargs):
    with torch.device("meta"):
        return torchvision_models.get_model(name, weights=None, **kwargs)


def shapes(model: nn.Module):
    return sorted(tuple(parameter.shape) for parameter in model.parameters())


# ---------------------------------------------------------------- parity with references

@pytest.mark.parametrize("name", sorted(TORCHVISION_TWINS))
def test_parameters_match_torchvision(name):
    ours = build_meta(name)
    theirs = build_torchvision_meta(TORCHVISION_TWINS[name], **({"aux_logits": False, "init_weights": True}
                                                               if name == "googlenet_tv" else {}))
    assert parameter_count(ours) == parameter_count(theirs)
    assert shapes(ours) == shapes(theirs)


@pytest.mark.parametrize("name, published", sorted(PUBLISHED_TORCHVISION_PARAMS.items()))
def test_parameters_match_published_torchvision_counts(name, published):
    assert parameter_count(build_meta(name)) == published


def test_googlenet_tv_aux_heads_match_torchvision():
    ours = build_meta("googlenet_tv", aux_logits=True)
    theirs = build_torchvision_meta("googlenet", aux_logits=True, init_weights=True)
    assert parameter_count(ours) == parameter_count(theirs)
    assert shapes(ours) == shapes(theirs)


# CBAM paper (Woo et al. 2018), Table 4, in millions, given to two decimals: each base network
# "+ SE" and "+ CBAM" has the same count at this precision.
CBAM_PAPER_MILLIONS = {"resnet18": 11.78, "resnet34": 21.96, "resnet50": 28.09, "resnet101": 49.33}


@pytest.mark.parametrize("attention", ["se", "cbam"])
@pytest.mark.parametrize("base, millions", sorted(CBAM_PAPER_MILLIONS.items()))
def test_attention_resnets_match_the_cbam_paper(base, millions, attention):
    params = parameter_count(build_meta(base, attention=attention))
    assert abs(params / 1e6 - millions) <= 0.005  # half a unit of the published last digit


def test_se_resnet50_matches_the_se_paper():
    # Hu et al., "Squeeze-and-Excitation Networks", reduction-ratio table: r = 16 gives 28.1M
    # (ResNet-50: 25.6M), quoted to one decimal.
    assert abs(parameter_count(build_meta("se_resnet50")) / 1e6 - 28.1) <= 0.05
    cbam_resnet50 = build_meta("resnet50", attention="cbam")
    assert parameter_count(build_meta("cbam_resnet50")) == parameter_count(cbam_resnet50)


def output_sizes(model, input_size, layer_types):
    """Spatial side of each ``layer_types`` layer's output, in call order, on the meta device."""
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, out: sizes.append(out.shape[-1]))
             for m in model.modules() if isinstance(m, layer_types)]
    try:
        model(torch.empty(1, *input_size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def test_zfnet_map_sizes_follow_the_paper():
    # Zeiler & Fergus, Figure 3: 224 -> 110 (conv1) -> 55 -> 26 (conv2) -> 13 -> 13, 13, 13 -> 6
    sizes = output_sizes(build_meta("zfnet").features, (3, 224, 224), (nn.Conv2d, nn.MaxPool2d))
    assert sizes == [110, 55, 26, 13, 13, 13, 13, 6]


def test_googlenet_map_sizes_follow_the_paper():
    # Szegedy et al., Table 1: 112 (conv 7x7/2), 56, 56, 56, 28, inception 3: 28, 4: 14, 5: 7
    model = build_meta("googlenet")
    stem = output_sizes(model.stem, (3, 224, 224), (nn.Conv2d, nn.MaxPool2d))
    assert stem == [112, 56, 56, 56, 28]
    sides = output_sizes(model, (3, 224, 224), type(model.inception["3a"]))
    assert sides == [28, 28, 14, 14, 14, 14, 14, 7, 7]


def test_googlenet_follows_the_paper_where_torchvision_does_not():
    paper, tv = build_meta("googlenet"), build_meta("googlenet_tv")
    # the third branch: 1x1 reduction then 5x5 (Table 1: 3a 16 -> 32, 5b 48 -> 128); torchvision: 3x3
    assert paper.inception["3a"].branch3[-1][0].weight.shape == (32, 16, 5, 5)
    assert paper.inception["5b"].branch3[-1][0].weight.shape == (128, 48, 5, 5)
    assert tv.inception["5b"].branch3[-1][0].weight.shape == (128, 48, 3, 3)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paper.modules())
    factorised = build_meta("googlenet", branch3_kernels=(3, 3)).inception["3a"].branch3
    assert [layer[0].weight.shape for layer in factorised] == [(16, 192, 1, 1), (32, 16, 3, 3),
                                                               (32, 32, 3, 3)]


def test_d2l_and_course_models_have_their_published_head_sizes():
    first_linear = lambda name: next(m for m in build_meta(name).modules() if isinstance(m, nn.Linear))
    assert first_linear("alexnet_2012").in_features == 6400   # d2l: 256 x 5 x 5
    assert first_linear("vgg11_quarter").in_features == 128 * 7 * 7
    assert first_linear("mnist_inception").in_features == 1408
    assert first_linear("mnist_resnet").in_features == 512
    assert build_meta("densenet_small").head[-1].in_features == 248  # d2l's DenseNet ends with 248
    assert build_meta("densenet121").head[-1].in_features == 1024
    convs = [m.out_channels for m in build_meta("vgg11_quarter").modules() if isinstance(m, nn.Conv2d)]
    assert convs == [16, 32, 64, 64, 128, 128, 128, 128]
    assert not any(isinstance(m, nn.Linear) for m in build_meta("nin").modules())


# ---------------------------------------------------------------- every registered model

@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_model_maps_its_natural_input_to_its_classes(name):
    spec = model_spec(name)
    model = build_meta(name).eval()
    assert model(torch.empty(2, *spec.input_size, device="meta")).shape == (2, spec.num_classes)
    # and another channel count and class count
    channels = 3 if spec.input_size[0] == 1 else 1
    model = build_meta(name, in_channels=channels, num_classes=7).eval()
    assert model(torch.empty(2, channels, *spec.input_size[1:], device="meta")).shape == (2, 7)


@pytest.mark.slow
@pytest.mark.parametrize("name, input_size", [
    ("mnist_inception", (1, 28, 28)), ("mnist_resnet", (1, 28, 28)), ("resnet18", (1, 32, 32)),
    ("cbam_resnet18", (3, 32, 32)), ("preact_resnet18", (1, 32, 32)), ("densenet_small", (1, 32, 32)),
    ("googlenet_tv", (1, 64, 64)),
])
def test_real_forward_and_backward_on_small_inputs(name, input_size):
    torch.manual_seed(0)
    model = create_model(name, in_channels=input_size[0], num_classes=10)
    logits = model(torch.randn(2, *input_size))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------- googlenet's auxiliary heads

def test_googlenet_aux_heads_only_when_asked_and_only_in_training():
    plain, with_aux = build_meta("googlenet"), build_meta("googlenet", aux_logits=True)
    assert plain.aux_heads is None
    # each head: 1x1 conv 512|528 -> 128 (+bias), FC 2048 -> 1024, FC 1024 -> 1000 (paper, section 5)
    head_params = sum(c * 128 + 128 for c in (512, 528)) + 2 * (2048 * 1024 + 1024 + 1024 * 1000 + 1000)
    assert parameter_count(with_aux) - parameter_count(plain) == head_params

    x = torch.empty(2, 3, 224, 224, device="meta")
    assert isinstance(plain.train()(x), torch.Tensor)
    out = with_aux.train()(x)
    assert isinstance(out, AuxOutputs) and out.logits.shape == (2, 1000)
    assert [a.shape for a in out.aux] == [(2, 1000), (2, 1000)]
    assert isinstance(with_aux.eval()(x), torch.Tensor)


def test_googlenet_aux_heads_train_on_small_inputs():
    model = create_model("googlenet", in_channels=1, num_classes=10, aux_logits=True).train()
    out = model(torch.randn(2, 1, 64, 64))
    assert [t.shape for t in (out.logits, *out.aux)] == [(2, 10)] * 3
    sum(t.sum() for t in (out.logits, *out.aux)).backward()
    assert model.aux_heads[0].layers[-1].weight.grad is not None


# ---------------------------------------------------------------- residual blocks and attention

@pytest.mark.parametrize("block_type", [BasicBlock, Bottleneck])
def test_preactivation_block_passes_the_identity_untouched(block_type):
    # He et al. 2016: with the branch silenced, a pre-activation block is exactly the identity,
    # negative values included; the original block still applies ReLU after the addition.
    x = torch.randn(2, 64 * block_type.expansion, 8, 8)
    for preactivation, expected in [(True, x), (False, torch.relu(x))]:
        block = block_type(x.shape[1], 64, preactivation=preactivation).eval()
        last_conv = [m for m in block.branch if isinstance(m, nn.Conv2d)][-1]
        nn.init.zeros_(last_conv.weight)
        if not preactivation:  # the branch ends in BatchNorm: silence its shift as well
            nn.init.zeros_(block.branch[-2].bias)
        torch.testing.assert_close(block(x), expected)


def test_squeeze_excitation_rescales_whole_channels_by_factors_in_0_1():
    torch.manual_seed(0)
    x = torch.rand(2, 32, 5, 5) + 0.5
    scale = SqueezeExcitation(32)(x) / x
    assert torch.allclose(scale, scale[..., :1, :1].expand_as(scale))  # one factor per channel
    assert ((scale > 0) & (scale < 1)).all()


def test_unknown_attention_is_a_one_line_error():
    with pytest.raises(UsageError, match="se, cbam, eca"):
        build_meta("resnet18", attention="gcnet")


# ---------------------------------------------------------------- registry

def test_torchvision_prefix_builds_any_torchvision_model_with_other_channels():
    model = build_meta("torchvision:resnet18", in_channels=1, num_classes=10)
    assert model.conv1.in_channels == 1
    assert model(torch.empty(2, 1, 64, 64, device="meta")).shape == (2, 10)
    assert isinstance(build_meta("torchvision:googlenet").train()(torch.empty(1, 3, 96, 96, device="meta")),
                      torch.Tensor)  # no aux heads unless asked


def test_unknown_names_suggest_close_ones():
    with pytest.raises(UnknownModel, match="resnet18"):
        create_model("resnet19")
    with pytest.raises(UnknownModel, match="resnet18"):
        create_model("torchvision:resnet19")
    with pytest.raises(UnknownModel, match="shell-style"):
        describe_models("nothing*")


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="resnet18"):
        @register_model(family="ResNet", year=2015)
        def resnet18(in_channels=3, num_classes=1000):
            return nn.Identity()
    assert parameter_count(build_meta("resnet18")) == 11_689_512  # the original is kept


def test_names_sort_naturally():
    assert list_models("resnet*") == ["resnet18", "resnet20", "resnet32", "resnet34", "resnet44", "resnet50",
                                      "resnet56", "resnet101", "resnet110", "resnet152"]
    assert list_models("densenet1*") == ["densenet121", "densenet161", "densenet169"]


# ---------------------------------------------------------------- cnnlab models

def test_models_command_csv_lists_every_model_with_its_real_count():
    result = CliRunner().invoke(app, ["models", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert list(rows) == list_models()
    assert rows["resnet18"]["params"] == "11689512" and rows["resnet18"]["input"] == "3x224x224"
    for name in ["lenet", "mnist_resnet", "mnist_inception"]:  # built for real, on the CPU
        assert int(rows[name]["params"]) == sum(p.numel() for p in create_model(name).parameters())
    assert rows["mnist_resnet"]["input"] == "1x28x28" and rows["mnist_resnet"]["classes"] == "10"


def test_models_command_table_json_and_out_file(tmp_path):
    runner = CliRunner()
    table = runner.invoke(app, ["models", "vgg16*"])
    assert table.exit_code == 0 and "138,357,544" in table.stdout and "138,365,992" in table.stdout
    out = tmp_path / "zoo.json"
    assert runner.invoke(app, ["models", "densenet*", "-f", "json", "--out", str(out)]).exit_code == 0
    records = json.loads(out.read_text())
    assert {r["name"]: r["params"] for r in records}["densenet121"] == 7_978_856


def test_models_command_pattern_matching_nothing_is_a_one_line_error():
    result = CliRunner().invoke(app, ["models", "resnet"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no model matches 'resnet'") and result.stderr.count("\n") == 1
