"""cnnlab draw: the diagram's boxes, branches and folds, read back from what was written
(the SVG's boxes and text, the .dot parsed by pydot, the .mmd's lines, the JSON graph), and
checked against the summary's layers and torchvision's architectures."""

import json
import re
import xml.etree.ElementTree as ElementTree

import pytest
import torchvision
from typer.testing import CliRunner

from cnnlab import summarize
from cnnlab.cli import app
from cnnlab import network_diagram, save_diagram  # the flat API
from synthetic_runs import make_run

runner = CliRunner()


def svg_boxes_and_text(path):
    """The box ids drawn (their patches' gids) and every text of the SVG."""
    root = ElementTree.parse(path).getroot()
    ids = {g.get("id")[len("box-"):] for g in root.iter("{http://www.w3.org/2000/svg}g")
           if (g.get("id") or "").startswith("box-")}
    text = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    return ids, text


@pytest.mark.parametrize("model", ["resnet18", "googlenet", "vgg16", "densenet_small"])
def test_expanded_boxes_are_the_summary_layers_one_to_one(model, tmp_path):
    picture = network_diagram(model, expand=True)
    save_diagram(picture, tmp_path / "d.svg")
    drawn, text = svg_boxes_and_text(tmp_path / "d.svg")
    assert drawn == {box.id for box in picture.boxes}
    layers = {r.name: r for r in summarize(model).layers if not r.is_container}
    boxes = [box for box in picture.boxes if box.kind != "input"]
    assert [box.layers for box in boxes] == [[name] for name in layers]  # one box each, in order
    for box in boxes:
        assert box.output_shape == layers[box.name].output_shape
        assert box.params == layers[box.name].params
    assert sum(box.params for box in boxes) == picture.params
    for box in boxes:  # every box's label is drawn
        assert box.label in text


def test_googlenet_first_inception_is_four_branches_from_one_input_into_one_concat():
    picture = network_diagram("googlenet", expand=True)
    concat = next(box for box in picture.boxes if box.name == "inception.3a.cat")
    group = next(g for g in picture.branch_groups() if g.join == concat.id)
    assert len(group.paths) == 4 and all(group.paths)  # 1x1, 3x3, 5x5 and pool paths, none empty
    heads = {path[0] for path in group.paths}
    assert {e.target for e in picture.edges if e.source == group.fork} == heads
    tails = {path[-1] for path in group.paths}
    assert {e.source for e in picture.edges if e.target == concat.id} == tails
    labels = sorted(picture.box(path[0]).label for path in group.paths)
    assert labels == ["conv 1×1/1, 16", "conv 1×1/1, 64", "conv 1×1/1, 96", "max pool 3×3/1"]


def test_resnet18_has_eight_adds_three_fed_by_a_projection():
    reference = torchvision.models.resnet18()
    blocks = [m for m in reference.modules() if isinstance(m, torchvision.models.resnet.BasicBlock)]
    projections = sum(block.downsample is not None for block in blocks)
    picture = network_diagram("resnet18", expand=True)
    adds = [box for box in picture.boxes if box.kind == "add"]
    assert len(adds) == len(blocks) == 8
    groups = [g for g in picture.branch_groups() if g.join in {box.id for box in adds}]
    assert len(groups) == 8
    shortcuts = [min(g.paths, key=len) for g in groups]
    fed_by_conv = [path for path in shortcuts if any(picture.box(b).kind == "conv" for b in path)]
    assert len(fed_by_conv) == projections == 3  # layer2.0, layer3.0, layer4.0 (1×1 stride 2)
    assert sum(path == [] for path in shortcuts) == 8 - projections  # identity: an edge fork -> add
    for group in groups:
        if [] in group.paths:
            assert any(e.source == group.fork and e.target == group.join for e in picture.edges)


def test_resnet152_folds_its_third_stage_into_one_downsampling_block_and_35(tmp_path):
    stage = torchvision.models.resnet152().layer3
    picture = network_diagram("resnet152")
    fold = next(f for f in picture.folds if f.blocks[0] == "layer3.1")
    assert fold.reason == "repeat" and len(fold.blocks) == len(stage) - 1 == 35
    box = picture.box(fold.box)
    assert box.label == "Bottleneck × 35" and box.repeat == 35
    summary = {r.name: r for r in summarize("resnet152").layers}
    assert box.params == sum(summary[f"layer3.{i}"].params for i in range(1, 36))
    assert box.output_shape == summary["layer3"].output_shape
    first = [b for b in picture.boxes if b.layers and b.layers[0].startswith("layer3.0.")]
    assert any(b.kind == "add" for b in first)  # the downsampling block is drawn layer by layer
    save_diagram(picture, tmp_path / "r.svg")
    _, text = svg_boxes_and_text(tmp_path / "r.svg")
    assert "Bottleneck × 35" in text
    assert len(network_diagram("resnet152", expand=True).folds) == 0


def test_densenet121_dense_blocks_show_their_concatenations():
    sizes = (6, 12, 24, 16)  # torchvision's densenet121 block_config
    reference = torchvision.models.densenet121()
    assert sum(1 for m in reference.modules() if isinstance(m, torchvision.models.densenet._DenseLayer)) == sum(sizes)
    picture = network_diagram("densenet121")
    concats = {box.id for box in picture.boxes if box.kind == "concat"}
    groups = [g for g in picture.branch_groups() if g.join in concats]
    assert len(groups) == len(concats) == sum(sizes)
    for group in groups:  # the block's input and the layer's new maps, side by side
        assert sorted(map(len, group.paths))[0] == 0 and len(group.paths) == 2
        new = picture.box(next(p for p in group.paths if p)[-1])
        joined = picture.box(group.join)
        assert joined.output_shape[0] == picture.box(group.fork).output_shape[0] + new.output_shape[0]


def test_depth_folds_each_module_at_that_level_into_one_box(tmp_path):
    picture = network_diagram("resnet18", depth=1)
    rows = summarize("resnet18").rows(depth=1)
    assert [box.name for box in picture.boxes[1:]] == [row.name for row in rows]
    assert [box.params for box in picture.boxes[1:]] == [row.params for row in rows]
    opened = network_diagram("googlenet", depth=1, unfold=["inception.3a"])
    group = next(g for g in opened.branch_groups() if opened.box(g.join).name == "inception.3a.cat")
    assert len(group.paths) == 4
    assert any(box.label == "inception.3b: Inception" for box in opened.boxes)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydot on a newer pyparsing
def test_dot_parses_and_mermaid_has_one_node_line_per_box(tmp_path):
    pydot = pytest.importorskip("pydot")
    picture = network_diagram("resnet18")
    save_diagram(picture, tmp_path / "r.dot")
    save_diagram(picture, tmp_path / "r.mmd")
    (graph,) = pydot.graph_from_dot_file(str(tmp_path / "r.dot"))
    nodes = {node.get_name() for node in graph.get_nodes()} - {"node", "edge", "graph"}
    assert nodes == {box.id for box in picture.boxes}
    assert sorted((e.get_source(), e.get_destination()) for e in graph.get_edges()) == \
        sorted((e.source, e.target) for e in picture.edges)
    lines = (tmp_path / "r.mmd").read_text().splitlines()
    node_lines = [line for line in lines if re.match(r"\s+\w+\[\"", line)]
    assert [line.split("[")[0].strip() for line in node_lines] == [box.id for box in picture.boxes]
    assert sum("-->" in line for line in lines) == len(picture.edges)


def test_cli_draws_png_svg_and_json_of_a_model_and_of_a_run(tmp_path):
    result = runner.invoke(app, ["draw", "resnet18", "--depth", "1", "-o", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    graph = json.loads((tmp_path / "r.json").read_text())
    assert [b["name"] for b in graph["boxes"][1:]] == [r.name for r in summarize("resnet18").rows(depth=1)]
    assert graph["params"] == 11_689_512  # torchvision's resnet18
    result = runner.invoke(app, ["draw", "lenet", "--format", "png", "-o", str(tmp_path / "l.out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "l.out").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = make_run(tmp_path / "runs", "small", model="lenet")
    result = runner.invoke(app, ["draw", str(run.path), "-o", str(tmp_path / "run.svg")])
    assert result.exit_code == 0, result.output
    _, text = svg_boxes_and_text(tmp_path / "run.svg")
    assert "input 1×28×28" in text and "fc 10" in text  # the run's input and classes


@pytest.mark.parametrize("args, message", [
    (["nosuch", "-o", "{out}/d.svg"], "unknown model"),
    (["vgg16", "--depth", "0", "-o", "{out}/d.svg"], "--depth"),
    (["vgg16", "--depth", "5", "-o", "{out}/d.svg"], "depth 1, not 5"),
    (["vgg16", "--depth", "1", "--expand", "-o", "{out}/d.svg"], "not both"),
    (["vgg16", "-o", "{out}/d.txt"], "cannot tell the diagram format"),
    (["googlenet", "--unfold", "inception3a", "-o", "{out}/d.svg"], "no module"),
])
def test_errors_are_one_line_and_write_nothing(args, message, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["draw", *[a.format(out=out) for a in args]])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not out.exists()
