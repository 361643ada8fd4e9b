"""Tab completion of model and experiment names and of run directories, fast enough for
a shell to call on every <Tab>: nothing here imports torch (``cnnlab --install-completion``
installs Typer's script for bash, zsh, fish or PowerShell). Choices (recipes, views, formats)
complete as Typer completes any choice.

The registry's names live with the builders, whose modules import torch, so ZOO repeats them;
tests/test_completion.py keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path

ZOO = (
    "alexnet", "alexnet_2012", "alexnet_tv", "cbam_resnet18", "cbam_resnet50", "densenet121", "densenet161",
    "densenet169", "densenet201", "densenet_small", "eca_resnet18", "eca_resnet50", "googlenet",
    "googlenet_factorised", "googlenet_naive", "googlenet_tv", "lenet", "lenet_relu", "mlp", "mnist_inception",
    "mnist_resnet", "nin", "nin_d2l", "plain20", "plain32", "plain44", "plain56", "plain110", "preact_resnet18",
    "preact_resnet34", "preact_resnet50", "resnet18", "resnet20", "resnet32", "resnet34", "resnet44", "resnet50",
    "resnet56", "resnet101", "resnet110", "resnet152", "se_resnet18", "se_resnet50", "small_cnn", "small_mlp",
    "vgg11", "vgg11_bn", "vgg11_quarter", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "zfnet",
)
RUN_RECORD = "config.json"


def starting_with(incomplete: str, names) -> list[str]:
    return [name for name in names if name.startswith(incomplete)]


def complete_model(incomplete: str) -> list[str]:
    return starting_with(incomplete, ZOO)


def complete_run(incomplete: str) -> list[str]:
    """Run directories (holding config.json) and the folders that hold runs, under the folder
    typed so far (the current one at first)."""
    prefix = incomplete[: incomplete.rfind("/") + 1]  # the folder as typed, with its slash
    folder = Path(prefix or ".")
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    found = []
    for entry in entries:
        path = f"{prefix}{entry.name}"
        if not path.startswith(incomplete) or not entry.is_dir() or entry.name.startswith("."):
            continue
        if (entry / RUN_RECORD).is_file():
            found.append(path)
        elif any((child / RUN_RECORD).is_file() for child in _subfolders(entry)):
            found.append(f"{path}/")
    return found


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [child for child in folder.iterdir() if child.is_dir()]
    except OSError:
        return []


def complete_model_or_run(incomplete: str) -> list[str]:
    return complete_model(incomplete) + complete_run(incomplete)


def complete_experiment(incomplete: str) -> list[str]:
    from cnnlab.experiments import EXPERIMENTS

    return starting_with(incomplete, EXPERIMENTS)
