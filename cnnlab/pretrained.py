"""torchvision's published ImageNet weights on cnnlab's own models.

Every zoo model listed in TORCHVISION_TWINS has torchvision's parameters shape for shape, in
the same order (both build their modules in the order the network computes), only under other
names (``stem.0`` for ``conv1``, ``head.2`` for ``fc`` ...). The weights file is the one
torchvision itself downloads, kept in torch's hub cache (``$TORCH_HOME/hub/checkpoints``), so a
file torchvision already fetched is reused and one fetched here serves torchvision too; it is
read with ``weights_only=True``. The mapping pairs the two state dictionaries position by
position and checks every shape; a test loads a torchvision model's file this way and gets
torchvision's logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from cnnlab.errors import BadCheckpoint, DataMissing, UsageError, first_line
from cnnlab.models.registry import TORCHVISION_PREFIX

WEIGHT_SETS = ("imagenet",)
IMAGENET_MEAN = [0.485, 0.456, 0.406]  # the statistics torchvision's ImageNet weights expect
IMAGENET_STD = [0.229, 0.224, 0.225]
# weights ported from TensorFlow expect pixels scaled to [-1, 1]: torchvision builds these models
# with transform_input=True, which turns ImageNet-normalised input back into that scale
TENSORFLOW_SCALED = ("googlenet", "inception_v3")

# cnnlab model -> torchvision model with the same parameters
TORCHVISION_TWINS = {
    "alexnet_tv": "alexnet",
    **{name: name for name in ["vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn",
                               "vgg19_bn", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                               "densenet121", "densenet161", "densenet169", "densenet201"]},
    "googlenet_tv": "googlenet",
}
# tensors of torchvision's file that the model may leave out: GoogLeNet's and Inception v3's
# side heads, which the files keep and the models have only with aux_logits=True
OPTIONAL_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")
# a batch norm's step counter: files saved before PyTorch 0.4 (the older weights) lack it, and
# nothing in evaluation reads it
COUNTER_SUFFIX = "num_batches_tracked"


@dataclass(frozen=True)
class PretrainedWeights:
    torchvision_name: str
    url: str
    categories: list[str]  # class names, in the order of the logits

    @property
    def mean_std(self) -> tuple[list[float], list[float]]:
        """The per-channel mean and std that normalise [0, 1] pixels for these weights."""
        if self.torchvision_name in TENSORFLOW_SCALED:
            return [0.5] * 3, [0.5] * 3
        return IMAGENET_MEAN, IMAGENET_STD

    @property
    def path(self) -> Path:
        """Where torchvision's cache keeps the file."""
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints" / Path(self.url).name


def torchvision_twin(model_name: str) -> str:
    """The torchvision model whose weights fit ``model_name``, or a one-line UsageError."""
    if model_name.startswith(TORCHVISION_PREFIX):
        return model_name[len(TORCHVISION_PREFIX):]
    if model_name not in TORCHVISION_TWINS:
        raise UsageError(f"no ImageNet weights for {model_name}: they exist for the models with a "
                         f"torchvision twin ({', '.join(TORCHVISION_TWINS)}) and torchvision:<name>")
    return TORCHVISION_TWINS[model_name]


def imagenet_weights(model_name: str) -> PretrainedWeights:
    from torchvision.models import get_model_weights

    tv_name = torchvision_twin(model_name)
    try:
        weights = get_model_weights(tv_name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise UsageError(f"torchvision publishes no weights for {tv_name}") from None
    return PretrainedWeights(tv_name, weights.url, list(weights.meta["categories"]))


def fetch(weights: PretrainedWeights) -> Path:
    """The weights file in torchvision's cache, downloaded there if it is missing. Offline, the
    error names the file and the folder to put it in."""
    path = weights.path
    if path.is_file():
        return path
    import torch.hub

    path.parent.mkdir(parents=True, exist_ok=True)
    hash_prefix = torch.hub.HASH_REGEX.search(path.name)  # torchvision's names end in -<sha256 prefix>
    try:
        torch.hub.download_url_to_file(weights.url, str(path), hash_prefix and hash_prefix.group(1), progress=True)
    except Exception as error:  # noqa: BLE001  urllib, ssl and socket errors all mean: not fetched
        raise DataMissing(f"cannot download {weights.url} ({first_line(error)}); put "
                          f"{path.name} into {path.parent}") from None
    return path


def load_imagenet_weights(model: nn.Module, model_name: str) -> PretrainedWeights:
    """Put torchvision's ImageNet weights for ``model_name`` into ``model`` (built by
    create_model with 3 input channels and 1000 classes)."""
    from cnnlab.runs.checkpoint import load_state

    weights = imagenet_weights(model_name)
    path = fetch(weights)
    ours = {name: tensor for name, tensor in model.state_dict().items() if not name.endswith(COUNTER_SUFFIX)}
    theirs = {name: tensor for name, tensor in load_state(path).items() if not name.endswith(COUNTER_SUFFIX)}
    # strict but for the counters; assign: the loaded tensors become the parameters, no copy
    model.load_state_dict(mapped_state(theirs, ours, path), strict=False, assign=True)
    return weights


def mapped_state(theirs: dict, ours: dict, path) -> dict:
    """``theirs`` renamed to ``ours``'s names, pairing the tensors in order; BadCheckpoint
    where the two disagree in number or in any shape."""
    if len(theirs) != len(ours):
        theirs = {name: tensor for name, tensor in theirs.items() if not name.startswith(OPTIONAL_PREFIXES)}
    if len(theirs) != len(ours):
        raise BadCheckpoint(f"{path} holds {len(theirs)} tensors where the model has {len(ours)}")
    mapped = {}
    for (their_name, tensor), (our_name, expected) in zip(theirs.items(), ours.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise BadCheckpoint(f"{path}: {their_name} {tuple(tensor.shape)} does not fit "
                                f"{our_name} {tuple(expected.shape)}")
        mapped[our_name] = tensor
    return mapped
