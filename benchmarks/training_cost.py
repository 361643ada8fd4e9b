"""What training d2l's seven chapter networks costs, at the book's input and batch sizes: the
README's "What will it cost?" table.

    python benchmarks/training_cost.py [--gpu-gib 24]

For each network (Fashion-MNIST: one channel, ten classes; plain SGD without momentum, as the
book trains): training FLOPs of one image (forward + backward, cnnlab.summary.cost), the
activations autograd keeps per image, weights + gradients + optimiser state, the peak at the
book's batch, and the largest batch whose estimated peak fits a GPU with --gpu-gib GiB free and
this machine's available RAM now (printed first). Nothing is computed on tensors: every figure comes from the traced shapes.
"""

import argparse

import torch

from cnnlab.summary import training_cost
from cnnlab.summary.fit import free_memory, largest_batch
from cnnlab.summary.report import byte_text, flop_text

# registry name, the book's input side and batch (d2l ch. 7-8)
D2L_NETWORKS = [("lenet", 28, 256), ("alexnet_2012", 224, 128), ("vgg11_quarter", 224, 128),
                ("nin_d2l", 224, 128), ("googlenet", 96, 128), ("resnet18", 96, 256), ("densenet_small", 96, 256)]


def rows(gpu_bytes: int) -> list[dict]:
    ram = free_memory(torch.device("cpu"))
    print(f"available RAM: {byte_text(ram)}")
    table = []
    for name, side, batch in D2L_NETWORKS:
        options = dict(input_size=(1, side, side), num_classes=10, batch_size=batch, optimizer="sgd")
        on_cpu = training_cost(name, device="cpu", **options)
        on_gpu = training_cost(name, device="cuda", **options)  # dropout keeps a byte a value there
        state = on_cpu.memory.weights + on_cpu.memory.gradients + on_cpu.memory.optimizer_state
        table.append({
            "model": name, "input": f"{side}x{side}", "batch": batch,
            "FLOPs/img": flop_text(on_cpu.per_image.train_flops),
            "kept/img": byte_text(on_cpu.saved_per_image),
            "w+g+opt": byte_text(state),
            "peak": byte_text(on_cpu.memory.peak),
            f"max {gpu_bytes / 2**30:g} GiB": f"{largest_batch(on_gpu, gpu_bytes):,}",
            "max RAM": f"{largest_batch(on_cpu, ram):,}",
        })
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-gib", type=float, default=24.0, help="free memory of the GPU to fit (GiB)")
    table = rows(int(parser.parse_args().gpu_gib * 2**30))
    header = list(table[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if column in ("model", "input") else "---:" for column in header) + "|")
    for row in table:
        print("| " + " | ".join(str(row[column]) for column in header) + " |")


if __name__ == "__main__":
    main()
