"""cnnlab show: pictures checked by what they draw (image arrays, boxes), against hand-set
weights, analytic formulas, the summary's published receptive fields, and torchvision."""

import json
import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.data import BatchTransform
from cnnlab.errors import UsageError
from cnnlab.models import create_model, list_models, model_spec, uninitialized
from cnnlab.pretrained import TORCHVISION_TWINS
from cnnlab.show import (Subject, activations, cam, errors, filters, load_subject, receptive_field,
                         save_picture)
from cnnlab.show.measure import centred_square_side, grad_cam

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [*map(str, args)])


def drawn_arrays(figure):
    """Every image drawn, per axes that shows any: the pictures' content."""
    return [[image.get_array() for image in ax.images] for ax in figure.axes if ax.images]


def drawn_extents(figure, *texts):
    """The window extents of ``texts`` once the figure is laid out and drawn."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    return [text.get_window_extent(renderer) for text in texts]


def inside(box, outer) -> bool:
    return outer.x0 <= box.x0 and box.x1 <= outer.x1 and outer.y0 <= box.y0 and box.y1 <= outer.y1


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """LeNet (ReLU) trained for two epochs on the embedded digits, with the small recipe's whole
    2-epoch warm-up (given, so not cut to a fifth of the run): a gentle start that leaves the
    channels these tests look at alive."""
    from cnnlab.training import TrainConfig, train

    return train(TrainConfig(model="lenet_relu", epochs=2, warmup_epochs=2.0,
                             runs_dir=str(tmp_path_factory.mktemp("runs"))), progress="none").path


def tiny_subject(model, input_size, **fields):
    channels = input_size[0]
    return Subject(model.eval(), "tiny", "tiny", input_size,
                   BatchTransform(input_size[1:], [0.0] * channels, [1 / 255] * channels), **fields)


# ----------------------------------------------------------------------------- filters

def test_filters_grid_shows_hand_set_grey_kernels():
    subject = load_subject("lenet_relu")
    conv = subject.model.features[0]  # 6 kernels 5x5, one input channel
    with torch.no_grad():
        conv.weight.copy_(torch.arange(6 * 25, dtype=torch.float32).view(6, 1, 5, 5) - 12)
    picture = filters(subject)
    (grid,) = drawn_arrays(picture.figure)[0]
    columns = 3  # ceil(sqrt(6)) tiles per row, 1-pixel gaps
    for k in range(6):
        weight = conv.weight[k, 0]
        r, c = divmod(k, columns)
        tile = torch.as_tensor(grid[r * 6: r * 6 + 5, c * 6: c * 6 + 5])
        assert torch.allclose(tile, weight / weight.abs().max() / 2 + 0.5)  # symmetric around 0.5
    assert picture.rows[0] == dict(layer="features.0", kernel=0, channel=0, row=0, column=0, weight=-12.0)


def test_filters_grid_shows_colour_kernels_with_zero_at_grey():
    model = nn.Sequential(nn.Conv2d(3, 2, 3))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[1, 0, 1, 1] = 4.0   # red centre
        model[0].weight[1, 2, 0, 0] = -2.0  # less blue in a corner
    (grid,) = drawn_arrays(filters(tiny_subject(model, (3, 8, 8))).figure)[0]
    second = torch.as_tensor(grid[0:3, 4:7])  # 2 tiles side by side, 1-pixel gap
    assert second.shape == (3, 3, 3)
    assert second[1, 1].tolist() == [1.0, 0.5, 0.5]
    assert second[0, 0].tolist() == [0.5, 0.5, 0.25]
    assert torch.all(torch.as_tensor(grid[0:3, 0:3]) == 0.5)  # an all-zero kernel is all grey


@pytest.mark.parametrize("in_channels, caption, bar_labels", [
    (1, "red positive, blue negative weights, white 0;\neach kernel scaled by its largest |weight|",
     ["-largest", "0", "+largest"]),
    (3, "each kernel scaled by its largest |weight|: grey is 0, a channel brighter\n"
        "than grey a positive weight, darker a negative one", None),
])
def test_filters_grid_says_what_its_colours_mean(in_channels, caption, bar_labels):
    model = nn.Sequential(nn.Conv2d(in_channels, 4, 3))
    figure = filters(tiny_subject(model, (in_channels, 8, 8))).figure
    grid_axes = figure.axes[0]
    (caption_box,) = drawn_extents(figure, grid_axes.xaxis.label)
    assert grid_axes.get_xlabel() == caption and inside(caption_box, figure.bbox)
    if bar_labels is None:  # colour kernels: no single colour scale to show
        assert len(figure.axes) == 1
    else:
        (bar,) = figure.axes[1:]
        assert [label.get_text() for label in bar.get_yticklabels()] == bar_labels
        assert list(bar.get_yticks()) == [0, 0.5, 1]  # the tiles' scale: 0.5 is a zero weight


# -------------------------------------------------------------------------- activations

def test_activations_draw_the_layers_outputs(digits_run):
    subject = load_subject(digits_run, checkpoint="best")
    picture = activations(subject, image="3", layers=["features.1", "features.4"])
    input_drawn, first_maps, second_maps = (arrays[0] for arrays in drawn_arrays(picture.figure))
    x = subject.transform(subject.test_images[3:4])
    with torch.no_grad():  # the reference: the modules called directly
        relu1 = subject.model.features[:2](x)[0]
        relu2 = subject.model.features[:5](x)[0]
    assert input_drawn.shape == (28, 28)  # shown at the model's input size
    for maps, drawn in ((relu1, first_maps), (relu2, second_maps)):
        h, w = maps.shape[1:]
        first = maps[0]
        expected = (first - first.min()) / (first.max() - first.min())
        assert torch.allclose(torch.as_tensor(drawn[:h, :w]), expected, atol=1e-6)
    assert {row["layer"] for row in picture.rows} == {"features.1", "features.4"}


def test_each_feature_map_panel_names_its_layer_and_map_size():
    model = nn.Sequential(nn.Conv2d(1, 40, 3), nn.ReLU(), nn.Conv2d(40, 6, 3))
    images = torch.randint(0, 256, (1, 1, 12, 12), dtype=torch.uint8)
    figure = activations(tiny_subject(model, (1, 12, 12), test_images=images), layers=["1", "2"]).figure
    titles = [ax.title for ax in figure.axes[1:]]
    assert [title.get_text() for title in titles] == ["1 · 40 maps 10×10, first 32 shown", "2 · 6 maps 8×8"]
    assert all(inside(box, figure.bbox) for box in drawn_extents(figure, *titles))


def test_layer_outputs_of_a_dag_model_match_its_modules():
    torch.manual_seed(0)
    subject = load_subject("resnet18", input_size=64)
    x = torch.randn(2, 3, 64, 64)
    outputs = subject.taps.outputs(x, ["layer2", "layer2.0.add"])
    block = subject.model.layer2[0]
    with torch.no_grad():
        into = subject.model.layer1(subject.model.stem(x))
        expected_add = block.branch(into) + block.projection(into)
        expected = subject.model.layer2(into)
    assert torch.allclose(outputs["layer2.0.add"], expected_add, atol=1e-5)
    assert torch.allclose(outputs["layer2"], expected, atol=1e-5)
    assert subject.model.training is False


# ------------------------------------------------------------------------ receptive field

def test_effective_side_of_analytic_masses():
    square = torch.zeros(41, 41)
    square[16:25, 16:25] = 1.0  # a uniform 9x9 block: 7x7 holds 49/81, so 95 % needs all 9
    assert centred_square_side(square, (20, 20), 0.95) == 9
    sigma = 4.0
    axis = torch.arange(101, dtype=torch.float64) - 50
    gaussian = torch.exp(-(axis.view(-1, 1) ** 2 + axis.view(1, -1) ** 2) / (2 * sigma ** 2))
    # a square of half-side a holds erf(a / (sigma sqrt 2))^2 of a 2-D Gaussian: 95 % at a = 2.236 sigma
    half = math.sqrt(2) * sigma * 1.5849  # erfinv(sqrt(0.95)) = 1.5849
    assert abs(centred_square_side(gaussian, (50, 50), 0.95) - (2 * half + 1)) <= 2


def test_rf_box_of_vgg16_conv5_3_spans_196_pixels_and_is_clipped_at_the_border(monkeypatch):
    # only the box is under test here: skip the (expensive, tested below) gradient of VGG-16
    monkeypatch.setattr("cnnlab.show.unit_gradients",
                        lambda taps, images, names, units: {name: torch.ones(224, 224) for name in names})
    with uninitialized():
        subject = load_subject("vgg16")
    centre = receptive_field(subject, ["features.29"], samples=1)
    corner = receptive_field(subject, ["features.29"], unit=(0, 0), samples=1)
    (box,) = centre.figure.axes[0].patches[:1]
    assert (box.get_width(), box.get_height()) == (196, 196)  # the published conv5_3 field
    assert centre.rows[0]["theoretical_size"] == 196
    (clipped,) = corner.figure.axes[0].patches[:1]
    # unit 0 is centred at 7.5 (start): its field runs from -90 to 105, cut at pixel 0
    assert (clipped.get_x(), clipped.get_y()) == (-0.5, -0.5)
    assert clipped.get_width() == clipped.get_height() == 106
    assert corner.rows[0]["box_right"] == 105


def test_a_single_rf_panel_wraps_its_title_inside_the_figure():
    picture = receptive_field(load_subject("lenet_relu"), ["features.4"], samples=2)
    figure = picture.figure
    (title,) = figure.texts
    (panel,) = figure.axes
    title_box, caption_box = drawn_extents(figure, title, panel.title)
    assert inside(title_box, figure.bbox), (title_box, figure.bbox)
    assert title_box.y0 >= caption_box.y1  # above the panel's caption, not over it
    assert len(title.get_text().splitlines()) > 2  # wrapped: one panel is narrower than the two lines
    assert " ".join(title.get_text().split()) == (  # every word kept
        "lenet_relu, random weights receptive field (box) and effective field: |gradient| over 2 random "
        "inputs, dashed square 95% of it")


@pytest.mark.slow
def test_effective_field_is_smaller_than_the_theoretical_and_grows_with_depth():
    subject = load_subject("resnet18")
    picture = receptive_field(subject, ["layer1", "layer2", "layer3", "layer4"], samples=4)
    theoretical = [row["theoretical_size"] for row in picture.rows]
    effective = [row["effective_size"] for row in picture.rows]
    assert theoretical == [43, 99, 211, 435]
    assert all(e < t for e, t in zip(effective, theoretical))
    assert effective == sorted(effective) and len(set(effective)) == 4
    heat = drawn_arrays(picture.figure)[0][0]
    assert heat.max() == 1.0 and heat[0, 0] == 0  # layer1's unit sees nothing at the corner


# --------------------------------------------------------------------------------- Grad-CAM

class TwoRegions(nn.Module):
    """Class 0 is the mean brightness of the top-left quadrant, class 1 of the bottom-right:
    nothing else can matter."""

    def __init__(self, side: int = 16):
        super().__init__()
        self.features = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.features.weight.fill_(1.0)
            self.features.bias.zero_()
        mask = torch.zeros(2, side, side)
        mask[0, : side // 2, : side // 2] = 1
        mask[1, side // 2:, side // 2:] = 1
        self.register_buffer("mask", mask)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        masked = self.features(x) * self.mask
        return self.head(masked)


def test_grad_cam_highlights_the_only_region_that_can_matter():
    images = torch.full((2, 1, 16, 16), 200, dtype=torch.uint8)
    images[0, :, :8, :8] = 255  # class 0 wins on the first image, class 1 on the second
    images[1, :, 8:, 8:] = 255
    subject = tiny_subject(TwoRegions(), (1, 16, 16), classes=["top-left", "bottom-right"],
                           test_images=images, test_labels=torch.tensor([0, 1]))
    picture = cam(subject, count=2, layers=["mul"])
    assert [(row["true"], row["predicted"]) for row in picture.rows] == [("top-left", "top-left"),
                                                                         ("bottom-right", "bottom-right")]
    assert [ax.get_title() for ax in picture.figure.axes[:2]] == [
        "#0 true top-left, predicted top-left", "#1 true bottom-right, predicted bottom-right"]
    assert [row["note"] for row in picture.rows] == [None, None] and not picture.figure.axes[0].texts
    first_heat, second_heat = (torch.as_tensor(arrays[1]) for arrays in drawn_arrays(picture.figure))
    assert first_heat[:8, :8].min() > 0.7 and first_heat[8:, :].max() == 0 and first_heat[:, 8:].max() == 0
    assert second_heat[8:, 8:].min() > 0.7 and second_heat[:8, :].max() == 0 and second_heat[:, :8].max() == 0
    # the class chosen decides the region: the other class's map on the same image
    other = grad_cam(subject.taps, subject.transform(images[:1]), "mul", classes=torch.tensor([1])).maps
    assert other[0, 8:, 8:].min() > 0.7 and other[0, :8, :].max() == 0


def dead_after_the_conv():
    """A ReLU that no image wakes after layer 0: no gradient of any score reaches it."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].bias.fill_(-1e3)
    return model, "0"


def everywhere_negative():
    """TwoRegions with negated maps: the gradient reaches them, but every region lowers the score."""
    model = TwoRegions()
    with torch.no_grad():
        model.features.weight.fill_(-1.0)
    return model, "mul"


@pytest.mark.parametrize("build, note", [(dead_after_the_conv, "no gradient reaches 0"),
                                         (everywhere_negative, "no region of mul raises the score")])
def test_a_blank_grad_cam_says_why_on_its_panel_and_in_its_row(build, note):
    model, layer = build()
    images = torch.full((2, 1, 16, 16), 200, dtype=torch.uint8)
    subject = tiny_subject(model, (1, 16, 16), classes=["a", "b"], test_images=images,
                           test_labels=torch.tensor([0, 1]))
    picture = cam(subject, count=2, layers=[layer])
    for ax, row in zip(picture.figure.axes, picture.rows):
        (text,) = ax.texts
        assert " ".join(text.get_text().split()) == note  # wrapped to the panel
        (box,) = drawn_extents(picture.figure, text)
        assert inside(box, ax.get_window_extent())
        assert len(ax.images) == 1  # the image, no (blank) heat map over it
        assert (row["note"], row["peak_row"], row["peak_column"]) == (note, None, None)


# ---------------------------------------------------------------------------------- errors

def test_errors_lists_exactly_the_images_evaluate_counts_wrong(digits_run):
    from cnnlab.evaluation import evaluate

    result = evaluate(digits_run, checkpoint="best", device="cpu", write=False)
    subject = load_subject(digits_run, checkpoint="best")
    picture = errors(subject, count=10_000)
    wrong = round((1 - result.top1) * result.images)
    assert len(picture.rows) == wrong > 0
    assert all(row["true"] != row["predicted"] for row in picture.rows)
    assert len(drawn_arrays(picture.figure)) == wrong
    assert f"{wrong} of {result.images} test images wrong" in picture.figure.texts[0].get_text()


# ----------------------------------------------------------------------- pretrained weights

# the smallest side that gets through a twin (32 for the others); googlenet_tv's pools differ from
# torchvision's at 32
SMALLEST_SIDE = {"alexnet_tv": 63, "googlenet_tv": 96}


def randomize(model: nn.Module) -> nn.Module:
    """Distinct random values in every tensor, batch-norm statistics included, so that two
    layers of one shape swapped by the mapping change the logits (cheaper than initializing).
    He-scaled weights and scales near 1 keep the activations' size through 200 layers (values
    that shrink into denormal floats make a CPU forward pass 30 times slower)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if tensor.dim() > 1:
                bound = math.sqrt(6 / tensor[0].numel())
                tensor.uniform_(-bound, bound, generator=generator)
            elif name.endswith(("running_var", "weight")):  # batch norm's variance and scale
                tensor.uniform_(0.5, 1.5, generator=generator)
            else:
                tensor.uniform_(-0.1, 0.1, generator=generator)
    return model


@pytest.fixture
def torch_home(tmp_path_factory, monkeypatch):
    """torchvision's cache ($TORCH_HOME/hub/checkpoints) in memory when /dev/shm exists: the
    VGG files are half a gigabyte each."""
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    monkeypatch.setenv("TORCH_HOME", str(root))
    yield root
    import shutil

    shutil.rmtree(root)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TORCHVISION_TWINS))
def test_imagenet_weights_give_torchvision_logits(name, torch_home):
    from torchvision import models as tv_models

    from cnnlab.pretrained import imagenet_weights, load_imagenet_weights

    tv_name, side = TORCHVISION_TWINS[name], SMALLEST_SIDE.get(name, 32)
    # GoogLeNet as torchvision builds it for its weights: side heads in the file, and
    # transform_input=True (the weights came from TensorFlow, which scales pixels to [-1, 1])
    extra = dict(aux_logits=True, init_weights=False, transform_input=True) if tv_name == "googlenet" else {}
    with uninitialized():
        theirs = randomize(tv_models.get_model(tv_name, weights=None, **extra)).eval()
        ours = create_model(name)
    path = imagenet_weights(name).path
    assert path.parent == torch_home / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.save(theirs.state_dict(), path)
    mean, std = load_imagenet_weights(ours, name).mean_std
    pixels = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # torchvision's models are fed ImageNet-normalised pixels (its transforms)
        expected = theirs(BatchTransform((side, side), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(pixels * 255))
        got = ours.eval()(BatchTransform((side, side), mean, std)(pixels * 255))
    assert expected.std() > 0 and torch.isfinite(expected).all()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_missing_weights_offline_name_the_file_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr("torch.hub.download_url_to_file", offline)
    result = invoke("show", "filters", "resnet18", "--weights", "imagenet", "--out", tmp_path / "f.png")
    assert result.exit_code != 0
    message = result.output.strip()
    assert len(message.splitlines()) == 1
    assert "resnet18-f37072fd.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert not (tmp_path / "f.png").exists()


# --------------------------------------------------------------------------------- the CLI

def test_show_command_writes_the_figure_and_its_numbers(digits_run, tmp_path):
    result = invoke("show", "rf", digits_run, "--layers", "features.0,features.5", "--samples", "4",
                    "--format", "json", "--out", tmp_path / "rf.svg")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rf.svg").read_text().lstrip().startswith("<?xml")
    rows = json.loads((tmp_path / "rf.json").read_text())
    assert [(row["layer"], row["theoretical_size"]) for row in rows] == [("features.0", 5), ("features.5", 16)]
    result = invoke("show", "filters", digits_run)  # default: into the run
    assert result.exit_code == 0, result.output
    assert (digits_run / "filters-features.0.png").is_file() and (digits_run / "filters-features.0.csv").is_file()


@pytest.mark.parametrize("args, words", [
    (["filters", "not-a-run-or-model"], "unknown model"),
    (["filters", "{tmp}"], "is not a cnnlab run"),
    (["filters", "runs/no-such-run"], "does not exist"),
    (["rf", "{run}", "--layer", "features.9"], "nearest: features."),
    (["rf", "{run}", "--layer", "classifier.1"], "spatial output"),
    (["activations", "{run}", "--image", "100000"], "out of range"),
    (["cam", "{run}", "--image", "{notimage}"], "cannot read image"),
    (["cam", "lenet_relu"], "give --image FILE"),
    (["errors", "{run}", "--out", "/proc/cnnlab/errors.png"], "error:"),
    (["filters", "{run}", "--out", "{tmp}/filters.txt"], "image format"),
    (["filters", "lenet_relu", "--weights", "imagenet"], "no ImageNet weights"),
    (["rf", "mlp"], "no layer with a spatial output"),
    # an option of another view: refused, not ignored
    (["filters", "lenet_relu", "--count", "4", "--out", "{tmp}/f.png"], "filters does not take --count (it is for cam, errors)"),
    (["errors", "{run}", "--layer", "features.0"], "errors does not take --layer (it is for filters, activations, rf, cam)"),
    (["activations", "{run}", "--samples", "16"], "activations does not take --samples (it is for rf)"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, words, digits_run, tmp_path):
    not_image = tmp_path / "photo.jpg"
    not_image.write_text("not an image")
    before = set(digits_run.iterdir())
    filled = [a.format(run=digits_run, notimage=not_image, tmp=tmp_path) for a in args]
    result = invoke("show", *filled)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.output
    assert set(digits_run.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]


def test_cam_on_a_users_photo_is_titled_with_the_top_classes(tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(photo)
    subject = load_subject("resnet18", input_size=64)
    subject.classes = [f"class {i}" for i in range(1000)]
    picture = cam(subject, image=str(photo))
    title = picture.figure.axes[0].get_title().splitlines()
    assert len(title) == 3 and all(line.startswith("class ") and line.endswith("%") for line in title)
    assert picture.rows[0]["predicted"] == title[0].rsplit(" ", 1)[0]


def test_figure_and_numbers_are_saved_side_by_side(tmp_path):
    picture = filters(load_subject("lenet_relu"))
    written = save_picture(picture, tmp_path / "k.pdf", "csv", dpi=50)
    assert written == [tmp_path / "k.pdf", tmp_path / "k.csv"]
    assert (tmp_path / "k.pdf").read_bytes().startswith(b"%PDF")
    assert len((tmp_path / "k.csv").read_text().splitlines()) == 1 + 6 * 25


def test_filters_of_imagenet_weights_are_torchvision_files_first_kernels(torch_home, tmp_path):
    from torchvision import models as tv_models

    from cnnlab.pretrained import imagenet_weights

    torch.manual_seed(0)
    theirs = tv_models.resnet18()
    path = imagenet_weights("resnet18").path
    path.parent.mkdir(parents=True)
    torch.save(theirs.state_dict(), path)
    result = invoke("show", "filters", "resnet18", "--weights", "imagenet", "--out", tmp_path / "k.png")
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "k.csv").read_text().splitlines()
    assert rows[0] == "layer,kernel,channel,row,column,weight" and len(rows) == 1 + 64 * 3 * 7 * 7
    kernel, channel, row, column = 5, 2, 3, 4
    line = rows[1 + ((kernel * 3 + channel) * 7 + row) * 7 + column].split(",")
    assert line[:5] == ["stem.0", "5", "2", "3", "4"]
    assert float(line[5]) == pytest.approx(float(theirs.conv1.weight[kernel, channel, row, column].detach()))


def test_torchvision_models_are_shown_by_their_own_layer_names():
    subject = load_subject("torchvision:resnet18", input_size=64)
    picture = receptive_field(subject, ["layer2"], samples=2)
    assert picture.rows[0]["theoretical_size"] == 99  # as cnnlab's resnet18 layer2
    assert filters(subject).stem == "filters-conv1"


class Untraceable(nn.Module):
    """Control flow on a tensor's value: torch.fx cannot trace it, so layers come from hooks."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))

    def forward(self, x):
        if x.sum() > 0:
            x = x * 2
        return self.head(self.features(x))


def every_hook(model):
    return [hook for module in model.modules() for hook in (*module._forward_hooks.values(),
                                                            *module._forward_pre_hooks.values())]


def test_views_restore_the_models_mode_and_flags_and_leave_no_hooks():
    images = torch.randint(0, 256, (3, 1, 12, 12), dtype=torch.uint8)
    for model in (Untraceable(), nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(300, 2))):
        subject = tiny_subject(model, (1, 12, 12), test_images=images, test_labels=torch.tensor([0, 1, 0]))
        subject.model.train()
        x = subject.transform(images)
        layer = "features.1" if isinstance(model, Untraceable) else "1"
        expected = model[:2](x) if not isinstance(model, Untraceable) else model.features(2 * x)
        assert torch.allclose(subject.taps.outputs(x, [layer])[layer], expected)
        if isinstance(model, Untraceable):  # no graph, so the summary has no fields to draw
            with pytest.raises(UsageError, match="receptive field of features.1 is unavailable"):
                receptive_field(subject, [layer], samples=2)
        else:
            receptive_field(subject, [layer], samples=2)
        cam(subject, count=3, layers=[layer])
        activations(subject, layers=[layer])
        assert model.training and all(p.requires_grad for p in model.parameters())
        assert every_hook(model) == []


def test_an_image_file_is_shown_to_a_grey_run_in_grey(digits_run, tmp_path):
    from PIL import Image

    photo = tmp_path / "seven.png"
    Image.new("RGB", (28, 28), (90, 120, 150)).save(photo)
    picture = activations(load_subject(digits_run, checkpoint="best"), image=str(photo), layers=["features.1"])
    drawn_input = torch.as_tensor(drawn_arrays(picture.figure)[0][0])
    assert drawn_input.shape == (28, 28)
    assert torch.allclose(drawn_input, torch.full((28, 28), 120 / 255))  # the mean of R, G and B
    assert picture.stem == "activations-seven"


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in list_models() if name not in ("mlp", "small_mlp")])  # no maps
def test_every_zoo_model_gives_its_stage_outputs_at_the_summarys_shapes(name):
    from cnnlab.show import default_stage_layers
    from cnnlab.show.measure import LayerTaps

    with torch.device("meta"):  # shapes only: the graph runs without arithmetic
        model = create_model(name)
    input_size = model_spec(name).input_size
    taps = LayerTaps(model, input_size)
    layers = default_stage_layers(taps)
    assert len(layers) >= 2
    outputs = taps.outputs(torch.empty(1, *input_size, device="meta"), layers)
    assert [tuple(outputs[layer].shape[1:]) for layer in layers] == [taps.output_shape(layer) for layer in layers]
    sides = [taps.output_shape(layer)[1] for layer in layers]
    assert sides == sorted(sides, reverse=True) and len(set(sides)) == len(sides)  # one per map size, in order
