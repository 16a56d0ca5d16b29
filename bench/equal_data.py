"""Equal data for the job and the reference recipe: carve the shared 50,000 JPEGs once into a 40,000-image
train/ and a stratified 10,000-image test/ (1,000 per class), so both sides train on the same images and are
judged on the same held-out ones (issue 34, item 4).

    python -m bench.equal_data --out /tmp/equal [--source ../shared/data/cifar10-jpeg-train.tar.gz]

The JPEG bytes are copied unchanged (no re-encoding), so both sides decode exactly the same files. The split
depends only on the sorted member names and the seed: rerunning it writes the same folders. Keep caches, runs and
logs outside OUT: the job reads OUT as an image-folder tree and refuses any file in it over 64 MiB (a decoded
cache of the training set is 123 MB).
"""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

import numpy as np

DEFAULT_SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg-train.tar.gz"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def list_images(archive: tarfile.TarFile) -> dict[str, list[tarfile.TarInfo]]:
    """train/<class>/<file> members by class, each sorted by name (the archive's order must not matter)."""
    by_class: dict[str, list[tarfile.TarInfo]] = {}
    for member in archive.getmembers():
        parts = Path(member.name).parts
        if member.isfile() and len(parts) == 3 and parts[0] == "train" and parts[2].lower().endswith(IMAGE_SUFFIXES):
            by_class.setdefault(parts[1], []).append(member)
    for members in by_class.values():
        members.sort(key=lambda m: m.name)
    return dict(sorted(by_class.items()))


def choose_test(by_class: dict[str, list], per_class: int, seed: int) -> dict[str, set[int]]:
    """Indices (into each class's sorted list) held out as test: per_class from every class."""
    rng = np.random.default_rng(seed)
    chosen = {}
    for name, members in by_class.items():
        if len(members) <= per_class:
            raise SystemExit(
                f"error: class {name!r} has {len(members)} images, needs more than {per_class} to hold out"
            )
        chosen[name] = {int(i) for i in rng.permutation(len(members))[:per_class]}
    return chosen


def carve(source: Path, out: Path, per_class: int = 1000, seed: int = 0) -> dict[str, int]:
    """Write out/train/<class>/* and out/test/<class>/*; returns the image count of each split."""
    counts = {"train": 0, "test": 0}
    with tarfile.open(source) as archive:
        by_class = list_images(archive)
        if not by_class:
            raise SystemExit(f"error: {source} has no train/<class>/*.jpg images")
        held = choose_test(by_class, per_class, seed)
        for name, members in by_class.items():
            for index, member in enumerate(members):
                split = "test" if index in held[name] else "train"
                target = out / split / name / Path(member.name).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
                counts[split] += 1
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder to write train/ and test/ into")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="train/<class>/*.jpg tar(.gz)")
    p.add_argument("--per-class", type=int, default=1000, help="test images per class")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not args.source.is_file():
        raise SystemExit(f"error: {args.source} not found; pass --source PATH to the cifar10-jpeg-train tar.gz")
    if (args.out / "train").exists() or (args.out / "test").exists():
        raise SystemExit(f"error: {args.out} already has train/ or test/; remove them or choose another --out")
    counts = carve(args.source, args.out, args.per_class, args.seed)
    print(f"{args.out}: train {counts['train']} images, test {counts['test']} images")


if __name__ == "__main__":
    main()
