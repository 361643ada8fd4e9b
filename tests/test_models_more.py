"""Model zoo additions against references: the CIFAR ResNets and plain nets (He et al. 2015,
section 4.2), ECA attention (Wang et al. 2020), GoogLeNet without 1x1 reductions (Szegedy et al.
2014, Fig. 2a), the ``width=`` multiplier, and ``model_options`` (what ``--model-arg`` parses).

Models are built on the meta device (shapes only) and counted, not run, except where a test
says so.
"""

import pytest
import torch
from torch import nn

from cnnlab.models import create_model, parameter_count, uninitialized
from cnnlab.models.attention import EfficientChannelAttention, eca_kernel_size
from cnnlab.models.blocks import AuxOutputs
from cnnlab.models.googlenet import INCEPTIONS, Inception
from cnnlab.summary import summarize


def build_meta(name, **kwargs):
    with torch.device("meta"):
        return create_model(name, **kwargs)


# ---------------------------------------------------------------- CIFAR ResNets and plain nets

# He et al. 2015, Table 6 (and akamaster/pytorch_resnet_cifar10's exact counts)
CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}


@pytest.mark.parametrize("depth, params", sorted(CIFAR_PARAMS.items()))
def test_cifar_resnets_and_plain_nets_have_the_published_parameter_counts(depth, params):
    assert parameter_count(build_meta(f"resnet{depth}")) == params
    assert parameter_count(build_meta(f"plain{depth}")) == params  # option A adds no parameters


@pytest.mark.parametrize("depth", sorted(CIFAR_PARAMS))
def test_cifar_resnets_have_6n_plus_2_weighted_layers(depth):
    layers = [m for m in build_meta(f"resnet{depth}").modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == depth
    assert {m.out_channels for m in layers if isinstance(m, nn.Conv2d)} == {16, 32, 64}


def test_cifar_resnet_macs_at_32x32():
    # 3·3·3·16·32² + 6n convolutions of 3·3·16·16·32², 3·3·32·32·16², 3·3·64·64·8² (the first of
    # stages 2 and 3 reads half the channels) + 64·10: 40,551,040 for n = 3 ("about 40.55 M")
    assert summarize("resnet20").totals.macs == 40_551_040
    assert summarize("resnet56").totals.macs == 125_485_696  # "about 125.5 M"
    assert summarize("plain20").totals.macs == 40_551_040


def test_zero_padding_shortcut_subsamples_and_pads_with_zeros():
    # a silenced branch leaves relu(shortcut(x)): x at every other pixel, then zero channels
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    block = model.layer2[0]
    nn.init.zeros_(block.branch[-2].weight)  # the branch's final BatchNorm scales to 0
    nn.init.zeros_(block.branch[-2].bias)
    x = torch.randn(2, 16, 32, 32)
    out = block(x)
    assert out.shape == (2, 32, 16, 16)
    torch.testing.assert_close(out[:, :16], torch.relu(x[:, :, ::2, ::2]))
    assert (out[:, 16:] == 0).all()


def test_plain_nets_have_no_shortcut():
    torch.manual_seed(0)
    block = create_model("plain20").eval().layer1[0]
    nn.init.zeros_(block.branch[-2].weight)
    nn.init.zeros_(block.branch[-2].bias)
    assert (block(torch.randn(2, 16, 8, 8)) == 0).all()  # nothing but the (silenced) branch


def test_cifar_resnet_summary_follows_the_shortcut_for_the_receptive_field():
    summary = summarize("resnet20")
    rows = {row.name: row for row in summary.layers}
    assert summary.warnings == []
    # 3x3 stem: 3; each block adds two 3x3 convolutions: +4 at jump 1, +8 at jump 2, +16 at jump 4
    assert rows["layer1"].rf_size == (3 + 3 * 4,) * 2
    assert rows["layer2.0.projection.subsample"].rf_size == (15, 15)
    assert rows["layer2"].rf_size == (15 + 2 + 4 + 2 * 8,) * 2 and rows["layer2"].rf_jump == (2, 2)
    assert rows["layer3"].rf_size == (37 + 4 + 8 + 2 * 16,) * 2 and rows["layer3"].rf_jump == (4, 4)


def test_cifar_resnets_train_on_a_small_batch():
    torch.manual_seed(0)
    for name in ("resnet20", "plain20"):
        model = create_model(name, attention="eca")
        logits = model(torch.randn(2, 3, 32, 32))
        assert logits.shape == (2, 10) and torch.isfinite(logits).all()
        logits.sum().backward()
        assert all(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------- ECA

def test_eca_kernel_size_follows_the_paper():
    # k = |log2(C)/2 + 1/2|_odd: 64 -> 3.5 -> 3, 128 -> 4 -> 5, 256 -> 4.5 -> 5, 512 -> 5,
    # 1024 -> 5.5 -> 5, 2048 -> 6 -> 7 (the paper's code rounds an even value up)
    assert {c: eca_kernel_size(c) for c in (64, 128, 256, 512, 1024, 2048)} == {
        64: 3, 128: 5, 256: 5, 512: 5, 1024: 5, 2048: 7}


def test_eca_adds_only_k_weights_per_block():
    # ResNet-18: two blocks each at 64 (k=3), 128, 256, 512 channels (k=5): 2·3 + 6·5 = 36
    assert parameter_count(build_meta("eca_resnet18")) - parameter_count(build_meta("resnet18")) == 36
    # ResNet-50 blocks end at 256 ×3, 512 ×4, 1024 ×6 (k=5), 2048 ×3 (k=7): 13·5 + 3·7 = 86
    assert parameter_count(build_meta("eca_resnet50")) - parameter_count(build_meta("resnet50")) == 86
    assert (parameter_count(build_meta("resnet20", attention="eca"))
            - parameter_count(build_meta("resnet20"))) == 9 * 3  # 16, 32, 64 channels: k = 3


def test_eca_gates_each_channel_from_its_neighbours_averages():
    torch.manual_seed(0)
    eca = EfficientChannelAttention(64)  # k = 3
    x = torch.rand(2, 64, 5, 5) + 0.5
    scale = eca(x) / x
    assert torch.allclose(scale, scale[..., :1, :1].expand_as(scale))  # one factor per channel
    # reference: sigmoid of a 3-tap correlation over the zero-padded channel averages
    means = nn.functional.pad(x.mean(dim=(2, 3)), (1, 1))
    taps = eca.conv.weight.view(3)
    expected = torch.sigmoid(sum(taps[i] * means[:, i:i + 64] for i in range(3)))
    torch.testing.assert_close(scale[..., 0, 0], expected)


def test_eca_gated_layers_have_a_global_receptive_field():
    rows = {row.name: row for row in summarize("eca_resnet18", input_size=(3, 64, 64)).layers}
    assert rows["layer1.0.branch.4"].rf_status == "ok"
    assert rows["layer1.0.branch.5"].type == "EfficientChannelAttention"
    assert rows["layer1.0.branch.5"].rf_status == "global"
    assert rows["layer1.0.branch.5"].params == 3


# ---------------------------------------------------------------- GoogLeNet without 1x1 reductions

def conv_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Conv2d))


def test_naive_inception_branches_read_the_full_input():
    # a block like 3b: 256 channels in; 3x3 branch of 192 (reduction 64), 5x5 of 96 (reduction 32)
    widths = dict(c1=128, c3_reduce=64, c3=192, c5_reduce=32, c5=96, pool_proj=64)
    reduced = Inception(256, **widths)
    naive = Inception(256, **widths, reductions=False)
    assert conv_weights(reduced.branch2) == 1 * 1 * 256 * 64 + 3 * 3 * 64 * 192 == 126_976
    assert conv_weights(naive.branch2) == 3 * 3 * 256 * 192 == 442_368
    assert conv_weights(reduced.branch3) == 1 * 1 * 256 * 32 + 5 * 5 * 32 * 96
    assert conv_weights(naive.branch3) == 5 * 5 * 256 * 96
    assert conv_weights(naive.branch4) == conv_weights(reduced.branch4) == 256 * 64  # projection kept
    x = torch.empty(1, 256, 28, 28, device="meta")
    assert naive.to("meta")(x).shape == reduced.to("meta")(x).shape == (1, 128 + 192 + 96 + 64, 28, 28)


def test_googlenet_naive_costs_what_table_1_without_reductions_predicts():
    # per block with C input channels: the reductions cost C·r3 + r3 + 9·r3·c3 and C·r5 + r5 + 25·r5·c5,
    # the naive convolutions 9·C·c3 and 25·C·c5 (the biases of c3 and c5 are in both); MACs are
    # the weights times the map's area (28² for 3a-3b, 14² for 4a-4e, 7² for 5a-5b at 224x224)
    extra_params = extra_macs = 0
    channels = 192
    for name, (c1, r3, c3, r5, c5, pool_proj) in INCEPTIONS.items():
        area = {"3": 28 * 28, "4": 14 * 14, "5": 7 * 7}[name[0]]
        reduced_weights = channels * r3 + 9 * r3 * c3 + channels * r5 + 25 * r5 * c5
        naive_weights = 9 * channels * c3 + 25 * channels * c5
        extra_params += naive_weights - reduced_weights - r3 - r5
        extra_macs += (naive_weights - reduced_weights) * area
        channels = c1 + c3 + c5 + pool_proj
    paper, naive = summarize("googlenet"), summarize("googlenet_naive")
    assert naive.totals.params - paper.totals.params == extra_params
    assert naive.totals.macs - paper.totals.macs == extra_macs
    # the measured figures (README): 6,998,552 -> 25,305,944 parameters, 1.58 -> 4.43 G MACs
    assert (paper.totals.params, naive.totals.params) == (6_998_552, 25_305_944)
    assert (paper.totals.macs, naive.totals.macs) == (1_582_671_872, 4_426_547_200)
    blocks = lambda name: [b.out_channels for b in build_meta(name).inception.values()]
    assert blocks("googlenet_naive") == blocks("googlenet")  # the rest of the network is unchanged


@pytest.mark.parametrize("name, options", [
    ("googlenet", {}), ("googlenet_tv", {}), ("googlenet_naive", {}), ("googlenet", {"width": 0.5}),
    ("googlenet_naive", {"branch3_kernels": (3, 3), "batch_norm": True}),
])
def test_every_googlenet_variant_returns_aux_outputs_only_in_training(name, options):
    model = build_meta(name, aux_logits=True, num_classes=10, **options)
    x = torch.empty(2, 3, 96, 96, device="meta")
    out = model.train()(x)
    assert isinstance(out, AuxOutputs) and [t.shape for t in (out.logits, *out.aux)] == [(2, 10)] * 3
    assert isinstance(model.eval()(x), torch.Tensor)
    assert isinstance(build_meta(name, **options).train()(x), torch.Tensor)  # no heads: plain logits


def test_summary_of_a_googlenet_with_aux_heads_is_the_eval_network():
    with uninitialized():
        with_aux = create_model("googlenet_naive", aux_logits=True, num_classes=10)
        without = create_model("googlenet_naive", num_classes=10)
    assert with_aux.training
    summary = summarize(with_aux, input_size=(3, 96, 96))
    assert with_aux.training  # the mode is restored
    assert summary.layers[-1].output_shape == (10,)
    assert summary.totals.macs == summarize(without, input_size=(3, 96, 96)).totals.macs
