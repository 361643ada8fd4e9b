"""How long does `cnnlab show rf resnet18 --samples 16` take, against the arithmetic it cannot avoid?

    python benchmarks/show_speed.py [--repeats N]

1. In this process, best of N: the effective receptive field of ResNet-18's layer4 centre unit
   over 16 random 224x224 inputs (forward to layer4, gradient back to the input) against one
   plain forward pass of the whole model on the same 16 inputs without gradients, the baseline.
2. End to end, median of N subprocesses: the command itself (imports, model, figure, CSV)
   against `python -c "import torch, torchvision"`.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from cnnlab.show import load_subject, receptive_field
from timing import best_time, median_subprocess_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    subject = load_subject("resnet18")
    inputs = torch.randn(16, 3, 224, 224)

    def forward():
        with torch.no_grad():
            subject.model(inputs)

    forward()  # warm-up of both (first convolutions pick their kernels)
    receptive_field(subject, ["layer4"], samples=16)
    baseline = best_time(forward, args.repeats)
    field = best_time(lambda: receptive_field(subject, ["layer4"], samples=16), args.repeats)
    print(f"forward pass, 16 images (baseline)        {baseline:6.2f} s  1.00x")
    print(f"effective field of layer4, 16 samples     {field:6.2f} s  {field / baseline:.2f}x")

    with tempfile.TemporaryDirectory() as directory:
        imports = median_subprocess_time([sys.executable, "-c", "import torch, torchvision"], args.repeats)
        command = median_subprocess_time([sys.executable, "-m", "cnnlab", "show", "rf", "resnet18", "--samples", "16",
                                          "--out", str(Path(directory) / "rf.png")], args.repeats)
    print(f"python -c 'import torch, torchvision'     {imports:6.2f} s  1.00x")
    print(f"cnnlab show rf resnet18 --samples 16      {command:6.2f} s  {command / imports:.2f}x")


if __name__ == "__main__":
    main()
