"""How fast is `cnnlab summary` against torchinfo, and how fast does `cnnlab --help` start?

    python benchmarks/summary_speed.py [pattern] [--repeats N]

1. For every registered model at its natural input, in this one process: cnnlab's summarize
   (builds the model on the meta device, traces it, no arithmetic) against torchinfo.summary
   (builds real weights, runs a real forward pass), both starting from the model name; the
   torchinfo time without the model build is shown too. Best of N runs, after one warm-up run
   of each tool (lazy imports are paid once per process).
2. Start-up: `python -m cnnlab --help` against `python -c pass`, in subprocesses, median of N.
3. End to end: `cnnlab summary vgg16` against a script that builds vgg16 and calls torchinfo,
   in subprocesses (both pay `import torch`), median of N.

torchinfo is a benchmark-only dependency (pip install -e '.[bench]'). Works offline.
"""

import argparse
import statistics
import sys

import torch
import torchinfo

import cnnlab
from cnnlab.summary import summarize
from timing import best_time, median_subprocess_time


def torchinfo_from_name(name: str, input_size) -> None:
    model = cnnlab.create_model(name)
    torchinfo.summary(model, input_size=(1, *input_size), verbose=0)


def compare_with_torchinfo(pattern: str, repeats: int) -> None:
    summarize("lenet"), torchinfo_from_name("lenet", (1, 28, 28))  # warm-up: lazy imports
    print(f"{'model':<18}{'input':>12}{'cnnlab s':>10}{'torchinfo s':>13}{'(no build)':>12}"
          f"{'ratio':>8}{'(no build)':>12}")
    ratios = []
    for name in cnnlab.list_models(pattern):
        input_size = cnnlab.model_spec(name).input_size
        ours = best_time(lambda: summarize(name), repeats)
        theirs = best_time(lambda: torchinfo_from_name(name, input_size), repeats)
        model = cnnlab.create_model(name)
        forward_only = best_time(lambda: torchinfo.summary(model, input_size=(1, *input_size), verbose=0),
                                 repeats)
        ratios.append(theirs / ours)
        print(f"{name:<18}{'x'.join(map(str, input_size)):>12}{ours:>10.3f}{theirs:>13.3f}"
              f"{forward_only:>12.3f}{theirs / ours:>7.1f}x{forward_only / ours:>11.1f}x")
    if ratios:
        print(f"torchinfo / cnnlab time: median {statistics.median(ratios):.1f}x, "
              f"smallest {min(ratios):.1f}x over {len(ratios)} models")


def startup(repeats: int) -> None:
    baseline = median_subprocess_time([sys.executable, "-c", "pass"], repeats)
    help_time = median_subprocess_time([sys.executable, "-m", "cnnlab", "--help"], repeats)
    print(f"\n`python -c pass`        {baseline:.3f} s")
    print(f"`cnnlab --help`         {help_time:.3f} s  ({help_time - baseline:+.3f} s over the interpreter)")


def end_to_end(repeats: int) -> None:
    ours = median_subprocess_time([sys.executable, "-m", "cnnlab", "summary", "vgg16"], repeats)
    script = ("import torchinfo, cnnlab; torchinfo.summary(cnnlab.create_model('vgg16'), "
              "input_size=(1, 3, 224, 224))")
    theirs = median_subprocess_time([sys.executable, "-c", script], repeats)
    only_torch = median_subprocess_time([sys.executable, "-c", "import torch"], repeats)
    print(f"\n`import torch` alone                 {only_torch:.2f} s")
    print(f"`cnnlab summary vgg16`               {ours:.2f} s")
    print(f"torchinfo on vgg16, from the name    {theirs:.2f} s  ({theirs / ours:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern", nargs="?", default="*", help="which registered models, e.g. 'resnet*'")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, torchinfo {torchinfo.__version__}\n")
    compare_with_torchinfo(args.pattern, args.repeats)
    startup(max(args.repeats, 5))
    end_to_end(args.repeats)


if __name__ == "__main__":
    main()
