"""The reference's training speed on this CPU: airbench94's network, optimizer step and augmentation (Keller
Jordan's CIFAR-10 speed-run recipe, KellerJordan/cifar10-airbench, airbench94.py) in PyTorch on CPU, timed
like bench/throughput.py times the job: images/s over a few optimizer steps on random images, after warm-up,
on the threads this process may use. It is the denominator of the issue's "≥ 1.2x the reference" goal.

PyTorch is not one of the job's dependencies: run it in a venv of its own, e.g.

    python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch numpy
    /tmp/torch/bin/python bench/reference/airbench94_torch.py --batch-size 1024 --precision float32

What it keeps from airbench94: the 2x2 whitening conv (24 channels, frozen kernel, learned bias) + GELU, three
conv-pool-BN-GELU / conv-BN-GELU blocks of 64/256/256 channels, BatchNorm without scale (momentum 0.6 in
airbench's sense, eps 1e-12), max-pool 3, a bias-free linear head x 1/9, label smoothing 0.2 with summed loss,
Nesterov SGD (momentum 0.85, weight decay, BatchNorm biases at 64x), lookahead every 5 steps, random flips and
2-pixel translations on the batch, channels-last tensors. What it leaves out: the whitening fit and the dirac init
(they run once, not per step) and torch.compile (airbench uses it on GPU; on CPU it is not part of the measured
reference).
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (64, 256, 256)
BN_MOMENTUM = 0.6  # airbench's; PyTorch's momentum is 1 - this


class BatchNorm(nn.BatchNorm2d):
    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-12, momentum=1 - BN_MOMENTUM)
        self.weight.requires_grad = False


def conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding="same", bias=False)


class ConvGroup(nn.Module):
    """`make_conv`: the convolution (bench/reference/airbench94_train.py passes airbench's dirac-initialised one)."""

    def __init__(self, cin: int, cout: int, make_conv=conv):
        super().__init__()
        self.conv1, self.pool, self.norm1 = make_conv(cin, cout), nn.MaxPool2d(2), BatchNorm(cout)
        self.conv2, self.norm2, self.activ = make_conv(cout, cout), BatchNorm(cout), nn.GELU()

    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class Mul(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


def make_net() -> nn.Module:
    whiten = nn.Conv2d(3, 24, kernel_size=2, padding=0, bias=True)
    whiten.weight.requires_grad = False
    net = nn.Sequential(
        whiten,
        nn.GELU(),
        ConvGroup(24, WIDTHS[0]),
        ConvGroup(WIDTHS[0], WIDTHS[1]),
        ConvGroup(WIDTHS[1], WIDTHS[2]),
        nn.MaxPool2d(3),
        nn.Flatten(),
        nn.Linear(WIDTHS[2], 10, bias=False),
        Mul(1 / 9),
    )
    return net.to(memory_format=torch.channels_last)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips and 2-pixel translations (reflect padding), on the whole batch."""
    n = len(images)
    flip = torch.rand(n, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    padded = F.pad(images, (2, 2, 2, 2), mode="reflect")
    dx, dy = torch.randint(0, 5, (2,), generator=generator).tolist()  # one shift per batch keeps it cheap
    return padded[:, :, dy : dy + 32, dx : dx + 32].contiguous(memory_format=torch.channels_last)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="0 = the CPUs this process may use")
    args = p.parse_args()
    import os

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    net = make_net()
    lr, wd, batch = 11.5 / 1024, 0.0153 / 1024, args.batch_size  # airbench94's per-example settings
    norm_biases = [p for n, p in net.named_parameters() if "norm" in n and p.requires_grad]
    others = [p for n, p in net.named_parameters() if "norm" not in n and p.requires_grad]
    optimizer = torch.optim.SGD(
        [
            {"params": norm_biases, "lr": lr * 64, "weight_decay": wd * batch / (lr * 64)},
            {"params": others, "lr": lr, "weight_decay": wd * batch / lr},
        ],
        momentum=0.85,
        nesterov=True,
    )
    slow = [t.detach().clone() for t in net.state_dict().values()]
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch * 4, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (batch * 4,), generator=generator)

    def step(i: int) -> None:
        chunk = slice((i % 4) * batch, (i % 4 + 1) * batch)
        inputs = augment(images[chunk], generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bfloat16"):
            outputs = net(inputs)
        loss = F.cross_entropy(outputs.float(), labels[chunk], label_smoothing=0.2, reduction="none").sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i % 5 == 0:  # lookahead over the whole state, as airbench94
            with torch.no_grad():
                for s, t in zip(slow, net.state_dict().values(), strict=True):
                    if t.dtype.is_floating_point:
                        s.lerp_(t, 0.23)
                        t.copy_(s)

    net.train()
    for i in range(args.warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    seconds = time.perf_counter() - t0
    record = {
        "reference": "airbench94 (PyTorch, CPU)",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": batch,
        "precision": args.precision,
        "timed_steps": args.steps,
        "images_per_second": round(args.steps * batch / seconds, 1),
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
