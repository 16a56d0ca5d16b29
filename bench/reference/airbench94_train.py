"""The reference recipe's accuracy: a full CPU port of airbench94 (Keller Jordan, KellerJordan/cifar10-airbench,
legacy/airbench94.py, the uncompiled variant), trained on an image-folder split and judged on its test/ split at
test-time augmentation levels 0, 1 and 2 (0 = none, 1 = mirror, 2 = mirror + 1-pixel translations).

    /tmp/torch/bin/python bench/reference/airbench94_train.py --data /tmp/equal --seed 0 --out ref-s0.json

--data is a folder with train/<class>/*.jpg and test/<class>/*.jpg (e.g. from `python -m bench.equal_data`);
sorted class folder names give the label ids. Images are decoded once with Pillow to uint8 and cached (.npz)
in --cache-dir, by default DATA-reference-cache beside DATA: not inside it, since the job refuses an image tree
holding a 123 MB file (the training set stored in one fixed random order, so that airbench's "first 5,000 training
images" that fit the whitening layer are a class mix, as in the original's CIFAR order).

Kept from airbench94: hyperparameters (9.9 epochs, batch 1024, lr 11.5 / wd 0.0153 per 1024 examples in
decoupled form, Nesterov momentum 0.85, BatchNorm-bias lr x 64, label smoothing 0.2, summed loss), the lr
schedule (0.2 -> 1.0 over 23% of the steps, then -> 0.07), lookahead every 5 steps with the cubic alpha schedule
and a final full copy, the whitening conv fit from 2x2 patch covariance of 5,000 training images (eps 5e-4,
frozen kernel, bias trained for the first 3 epochs), dirac init of every conv, BatchNorm without scale
(momentum 0.6 in airbench's sense, eps 1e-12), GELU, the 1/9 output scale, augmentation (random flip of the
whole set once, then all images flipped every other epoch; per-image random 2-pixel translations from a
reflect-padded copy), drop_last, channels-last tensors, and infer() with its TTA weights.
Changed for CPU: float32 weights with bf16 autocast (--precision bfloat16, the default; the original keeps
half weights and float32 BatchNorm on CUDA), torch.compile not used (the legacy variant does not use it
either), timing by time.perf_counter instead of CUDA events, no warm-up run, the normalised training images
kept in float32 instead of half, and per-epoch test accuracy only with --eval-every-epoch (it never influences
training; off by default to save time).
"""

import argparse
import json
import os
import sys
import time
from math import ceil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from airbench94_torch import ConvGroup, Mul  # the throughput reference's modules

# airbench94's hyp (per-1024-example lr and weight decay, in its decoupled form)
HYP = dict(train_epochs=9.9, batch_size=1024, lr=11.5, momentum=0.85, weight_decay=0.0153, bias_scaler=64.0)
HYP.update(label_smoothing=0.2, whiten_bias_epochs=3, translate=2, widths=(64, 256, 256), scaling_factor=1 / 9)
CIFAR_MEAN = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
CIFAR_STD = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1)


def load_split(root: Path, split: str, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, 32, 32, 3] and int64 labels of root/split/<class>/*, decoded once and cached in cache_dir."""
    cache = cache_dir / f"{split}.npz"
    if cache.exists():
        with np.load(cache) as saved:
            return saved["images"], saved["labels"]
    from PIL import Image

    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    files = [(f, label) for label, c in enumerate(classes) for f in sorted((root / split / c).iterdir())]
    images = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8) for f, _ in files])
    labels = np.array([label for _, label in files], dtype=np.int64)
    if split == "train":  # the original's CIFAR order is a class mix; the whitening fit reads the first 5,000
        order = np.random.default_rng(0).permutation(len(labels))
        images, labels = images[order], labels[order]
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, images=images, labels=labels)
    return images, labels


def normalize(images_uint8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float() / 255
    return ((x - CIFAR_MEAN) / CIFAR_STD).contiguous(memory_format=torch.channels_last)


def batch_flip_lr(inputs: torch.Tensor) -> torch.Tensor:
    flip_mask = (torch.rand(len(inputs)) < 0.5).view(-1, 1, 1, 1)
    return torch.where(flip_mask, inputs.flip(-1), inputs)


def batch_crop(images: torch.Tensor, crop_size: int) -> torch.Tensor:
    """airbench's per-image random translation (its r <= 2 branch) from a reflect-padded copy."""
    r = (images.size(-1) - crop_size) // 2
    shifts = torch.randint(-r, r + 1, size=(len(images), 2))
    out = torch.empty((len(images), 3, crop_size, crop_size), dtype=images.dtype)
    for sy in range(-r, r + 1):
        for sx in range(-r, r + 1):
            mask = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
            out[mask] = images[mask, :, r + sy : r + sy + crop_size, r + sx : r + sx + crop_size]
    return out.contiguous(memory_format=torch.channels_last)


class Conv(nn.Conv2d):
    def __init__(self, cin, cout, kernel_size=3, padding="same", bias=False):
        super().__init__(cin, cout, kernel_size=kernel_size, padding=padding, bias=bias)

    def reset_parameters(self):
        super().reset_parameters()
        if self.bias is not None:
            self.bias.data.zero_()
        w = self.weight.data
        torch.nn.init.dirac_(w[: w.size(1)])


def make_net() -> nn.Sequential:
    w = HYP["widths"]
    net = nn.Sequential(
        Conv(3, 24, kernel_size=2, padding=0, bias=True),
        nn.GELU(),
        ConvGroup(24, w[0], Conv),
        ConvGroup(w[0], w[1], Conv),
        ConvGroup(w[1], w[2], Conv),
        nn.MaxPool2d(3),
        nn.Flatten(),
        nn.Linear(w[2], 10, bias=False),
        Mul(HYP["scaling_factor"]),
    )
    net[0].weight.requires_grad = False
    return net.to(memory_format=torch.channels_last)


def init_whitening_conv(layer: nn.Conv2d, train_set: torch.Tensor, eps: float = 5e-4) -> None:
    h, w = layer.weight.shape[2:]
    c = train_set.shape[1]
    patches = train_set.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w).float()
    flat = patches.reshape(len(patches), -1)
    eigenvalues, eigenvectors = torch.linalg.eigh(flat.T @ flat / len(flat), UPLO="U")
    eigenvalues, eigenvectors = (
        eigenvalues.flip(0).view(-1, 1, 1, 1),
        eigenvectors.T.reshape(c * h * w, c, h, w).flip(0),
    )
    scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
    layer.weight.data[:] = torch.cat((scaled, -scaled))


def infer(net: nn.Module, images: torch.Tensor, tta_level: int, bf16: bool) -> torch.Tensor:
    def mirror(x):
        return 0.5 * net(x) + 0.5 * net(x.flip(-1))

    def mirror_translate(x):
        padded = F.pad(x, (1,) * 4, "reflect")
        shifted = [padded[:, :, 0:32, 0:32], padded[:, :, 2:34, 2:34]]
        return 0.5 * mirror(x) + 0.5 * torch.stack([mirror(s) for s in shifted]).mean(0)

    fn = [net, mirror, mirror_translate][tta_level]
    net.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return torch.cat([fn(batch).float() for batch in images.split(2000)])


def accuracy_at(net, images, labels, tta_level: int, bf16: bool) -> float:
    return (infer(net, images, tta_level, bf16).argmax(1) == labels).float().mean().item()


def make_optimizer(net: nn.Module, total_steps: int):
    """Nesterov SGD in airbench94's decoupled units, BatchNorm biases at 64x lr, and its warm-up/down schedule."""
    batch, momentum = HYP["batch_size"], HYP["momentum"]
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = HYP["lr"] / kilostep_scale
    wd = HYP["weight_decay"] * batch / kilostep_scale
    lr_biases = lr * HYP["bias_scaler"]
    norm_biases = [p for k, p in net.named_parameters() if "norm" in k and p.requires_grad]
    others = [p for k, p in net.named_parameters() if "norm" not in k and p.requires_grad]
    groups = [
        {"params": norm_biases, "lr": lr_biases, "weight_decay": wd / lr_biases},
        {"params": others, "lr": lr, "weight_decay": wd / lr},
    ]
    optimizer = torch.optim.SGD(groups, momentum=momentum, nesterov=True)
    warmup = int(total_steps * 0.23)

    def get_lr(step):
        if step < warmup:
            return 0.2 * (1 - step / warmup) + step / warmup
        frac = (step - warmup) / (total_steps - warmup)
        return (1 - frac) + 0.07 * frac

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, get_lr)


class Lookahead:
    """airbench's LookaheadState over the whole state (BatchNorm statistics included)."""

    def __init__(self, net: nn.Module):
        self.net, self.slow = net, {k: v.clone() for k, v in net.state_dict().items()}

    def update(self, decay: float) -> None:
        with torch.no_grad():
            for s, t in zip(self.slow.values(), self.net.state_dict().values(), strict=True):
                if t.dtype.is_floating_point:
                    s.lerp_(t, 1 - decay)
                    t.copy_(s)


def train(net, images, labels, bf16: bool, log) -> float:
    """airbench94's main() training loop; returns training seconds."""
    batch, epochs = HYP["batch_size"], HYP["train_epochs"]
    steps_per_epoch = len(images) // batch  # drop_last
    total_steps = ceil(steps_per_epoch * epochs)
    optimizer, scheduler = make_optimizer(net, total_steps)
    alpha = 0.95**5 * (torch.arange(total_steps + 1) / total_steps) ** 3
    lookahead = Lookahead(net)  # before the whitening fit, as in airbench94
    t0 = time.perf_counter()
    init_whitening_conv(net[0], images[:5000])
    flipped = batch_flip_lr(images)  # airbench's loader: pre-flip once, pre-pad once
    padded = F.pad(flipped, (HYP["translate"],) * 4, "reflect")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=HYP["label_smoothing"], reduction="none")
    step = 0
    for epoch in range(ceil(epochs)):
        net[0].bias.requires_grad = epoch < HYP["whiten_bias_epochs"]
        epoch_images = batch_crop(padded, 32)
        if epoch % 2 == 1:
            epoch_images = epoch_images.flip(-1)
        order = torch.randperm(len(epoch_images))
        net.train()
        for i in range(steps_per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            inputs, targets = epoch_images[idx], labels[idx]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                outputs = net(inputs)
            loss = loss_fn(outputs.float(), targets).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % 5 == 0:
                lookahead.update(alpha[step].item())
            if step >= total_steps:
                lookahead.update(1.0)
                break
        train_acc = (outputs.detach().argmax(1) == targets).float().mean().item()
        seconds = time.perf_counter() - t0
        log(epoch=epoch, steps=step, train_loss=loss.item() / batch, train_acc=train_acc, seconds=seconds)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder with train/<class>/* and test/<class>/*")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, help="decoded-image cache (default: DATA-reference-cache beside DATA)")
    p.add_argument("--precision", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--threads", type=int, default=0, help="0 = the CPUs this process may use")
    p.add_argument("--eval-every-epoch", action="store_true", help="test accuracy (TTA 0) after each epoch")
    p.add_argument("--out", type=Path, help="JSON result")
    args = p.parse_args()
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    torch.manual_seed(args.seed)
    bf16 = args.precision == "bfloat16"
    cache_dir = args.cache_dir or args.data.parent / f"{args.data.name}-reference-cache"
    x_train, y_train = load_split(args.data, "train", cache_dir)
    x_test, y_test = load_split(args.data, "test", cache_dir)
    images, labels = normalize(x_train), torch.from_numpy(y_train)
    test_images, test_labels = normalize(x_test), torch.from_numpy(y_test)
    net = make_net()
    epochs_log = []

    def log(**row):
        if args.eval_every_epoch:
            row["test_acc_tta0"] = accuracy_at(net, test_images, test_labels, 0, bf16)
        epochs_log.append(row)
        print(json.dumps(row), flush=True)

    load_before = os.getloadavg()
    seconds = train(net, images, labels, bf16, log)
    load_after = os.getloadavg()
    accuracy = {f"tta{level}": round(accuracy_at(net, test_images, test_labels, level, bf16), 4) for level in (0, 1, 2)}
    record = {
        "side": "reference (airbench94 CPU port, PyTorch)",
        "seed": args.seed,
        "precision": args.precision,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_images": len(labels),
        "test_images": len(test_labels),
        "epochs": HYP["train_epochs"],
        "train_seconds": round(seconds, 1),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "test_accuracy": accuracy,
        "epochs_log": epochs_log,
    }
    print(json.dumps({k: v for k, v in record.items() if k != "epochs_log"}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
