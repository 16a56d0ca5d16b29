"""The figures of `make bench`: test accuracy against training time and against epochs (beside the reference
recipe and this machine's earlier results), and inference throughput per runner and batch size."""

import json
from pathlib import Path

# The accuracies whose first crossing the bench reports (seconds_to_67 ...): the seed recipe's level, 80%, 90%, and
# airbench94's 94% (reached on the original CIFAR-10 arrays, not on this project's JPEG data).
THRESHOLDS = (0.67, 0.80, 0.90, 0.94)

# airbench94's published result (KellerJordan/cifar10-airbench): 94.01% test accuracy in 9.9 epochs on the original
# CIFAR-10 arrays. On this project's JPEG q75 data the same recipe reaches about 91.0% (docs/performance.md).
REFERENCE = {"epochs": 9.9, "accuracy": 0.9401, "label": "airbench94 (published, original CIFAR-10)"}


def previous_results(folder: Path, name: str, tag: str) -> list[tuple[str, dict]]:
    """Earlier result files of the same machine tag in `folder` (bench/results keeps one file per run)."""
    out = []
    for path in sorted(folder.glob(f"*-{tag}.json")):
        if path.stem != name:
            try:
                out.append((path.stem.split(f"-{tag}")[0], json.loads(path.read_text())))
            except ValueError:
                continue
    return out


def plot(results: dict, folder: Path, name: str) -> None:
    """<name>-time_to_accuracy.png and <name>-inference.png beside <name>.json."""
    from job.report.plots import pyplot

    plt = pyplot()

    # Accuracy per minute (this machine) and per epoch (compute, which no CPU changes), beside the reference
    # recipe's published result and this machine's own previous results.
    fig, (ax, ax_epoch) = plt.subplots(1, 2, figsize=(13, 5))
    tag = results["machine"].get("tag") or name.split("-", 3)[-1]  # older files: the tag is in the name
    previous = previous_results(folder, name, tag)
    for rec in results["training"]:
        pts = rec["curve"]
        label = f"{rec['preset']} ({rec['model']}, batch {rec['batch_size']})"
        line = ax.plot([p["seconds"] / 60 for p in pts], [p["test_accuracy"] for p in pts], "o-", label=label)
        ax_epoch.plot(
            [p["epoch"] for p in pts], [p["test_accuracy"] for p in pts], "o-", label=label, color=line[0].get_color()
        )
        for old_name, old in previous:
            before = next((r for r in old["training"] if r["preset"] == rec["preset"]), None)
            if before:
                ax_epoch.plot(
                    [p["epoch"] for p in before["curve"]],
                    [p["test_accuracy"] for p in before["curve"]],
                    ":",
                    color=line[0].get_color(),
                    alpha=0.6,
                    label=f"{rec['preset']}, {old_name}",
                )
    epochs, accuracy = REFERENCE["epochs"], REFERENCE["accuracy"]
    ax_epoch.plot([epochs], [accuracy], "k*", markersize=12, label=REFERENCE["label"])
    for t in THRESHOLDS:
        ax.axhline(t, color="grey", lw=0.6, ls="--")
        ax_epoch.axhline(t, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("training wall time (minutes, this machine)")
    ax_epoch.set_xlabel("epoch")
    for a in (ax, ax_epoch):
        a.set_ylabel("test accuracy (held-out split)")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    ax.set_title(f"Per minute ({results['machine'].get('cpu_model', '?')}, {tag})")
    ax_epoch.set_title("Per epoch (compute), with the reference recipe")
    fig.tight_layout()
    fig.savefig(folder / f"{name}-time_to_accuracy.png", dpi=110)
    plt.close(fig)

    inf = results["inference"]["images_per_second"]
    fig, ax = plt.subplots(figsize=(8, 5))
    runners, batches = list(inf), ["1", "64", "256"]
    width = 0.8 / len(runners)
    for i, runner in enumerate(runners):
        ax.bar([b + i * width for b in range(len(batches))], [inf[runner][b] for b in batches], width, label=runner)
    ax.set_xticks([b + 0.4 - width / 2 for b in range(len(batches))], [f"batch {b}" for b in batches])
    ax.set_ylabel("images / second")
    ax.set_yscale("log")
    ax.set_title(f"Inference throughput ({results['inference']['model']})")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(folder / f"{name}-inference.png", dpi=110)
    plt.close(fig)
