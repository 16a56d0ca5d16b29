"""MODEL_CARD.md for a run, generated from the run's own metrics (never hand-edited numbers)."""

import json
from pathlib import Path

import numpy as np

from job.config.parts import RunRecord
from job.contract import OPSET
from job.data.dataset import CIFAR10_CLASSES
from job.storage.layout import CONFUSION_MATRIX, MISCLASSIFIED, MODEL_CARD, SAVEDMODEL_DIRS

TTA_LEVELS = {0: "none", 1: "mirror", 2: "mirror + 1-pixel translations"}

MODEL_DESCRIPTIONS = {
    "seed_cnn": "Keras Sequential CNN (the reference recipe): Conv2D(32)-MaxPool-Conv2D(64)-MaxPool-Conv2D(64)-"
    "Flatten-Dense(64)-Dropout(0.5)-Dense(softmax)",
    "fast_net": "airbench-style conv-BN network (frozen 2x2 patch-whitening stem, three conv-pool-BN-ReLU / "
    "conv-BN-ReLU blocks, global max-pool, linear head)",
}


def weak_classes(metrics: dict, class_names: list[str], n: int = 3) -> list[tuple[str, float]]:
    report = metrics["classification_report"]
    scored = sorted(((c, report[c]["f1-score"]) for c in class_names), key=lambda t: t[1])
    return scored[:n]


def top_confusions(matrix: list[list[int]], class_names: list[str], n: int = 3) -> list[tuple[str, str, int]]:
    m = np.array(matrix)
    np.fill_diagonal(m, 0)
    order = np.dstack(np.unravel_index(np.argsort(-m.ravel()), m.shape))[0][:n]
    return [(class_names[i], class_names[j], int(m[i, j])) for i, j in order if m[i, j] > 0]


def front_matter(run_id: str, metrics: dict) -> str:
    """The YAML header model hubs and tools read (Hugging Face's model card metadata: library_name,
    pipeline_tag, datasets, metrics and a model-index with the test results). Written by hand: block YAML of
    plain scalars, quoted where needed, so the job needs no YAML library."""
    cifar = metrics["data"]["class_names"] == CIFAR10_CLASSES
    dataset = "cifar10" if cifar else "custom"
    dataset_name = "CIFAR-10" if cifar else "image folder"
    q = json.dumps  # a JSON string is a valid YAML double-quoted scalar
    results = [
        ("Test accuracy (Keras)", metrics["test_accuracy"]),
        ("Test accuracy (ONNX Runtime)", metrics["onnx_test_accuracy"]),
    ]
    lines = [
        "---",
        "library_name: onnx",
        "pipeline_tag: image-classification",
        "license: apache-2.0",
        "tags:",
        *[f"  - {t}" for t in ("image-classification", "onnx", "keras", "tensorflow", dataset)],
        "datasets:",
        f"  - {dataset}",
        "metrics:",
        "  - accuracy",
        "model-index:",
        f"  - name: {q('cifar10-job-' + run_id)}",
        "    results:",
        "      - task:",
        "          type: image-classification",
        "          name: Image Classification",
        "        dataset:",
        f"          type: {dataset}",
        f"          name: {q(dataset_name + ' (' + metrics['data']['test_split'] + ')')}",
        "          split: test",
        "        metrics:",
    ]
    for name, value in results:
        lines += [
            "          - type: accuracy",
            f"            value: {round(float(value), 6)}",
            f"            name: {q(name)}",
        ]
    return "\n".join([*lines, "---", ""])


def class_table(report: dict, names: list[str]) -> str:
    """The per-class precision / recall / F1 rows, then the two averages."""
    rows = "\n".join(
        f"| {c} | {report[c]['precision']:.4f} | {report[c]['recall']:.4f} | "
        f"{report[c]['f1-score']:.4f} | {int(report[c]['support'])} |"
        for c in names
    )
    for avg in ("macro avg", "weighted avg"):
        rows += (
            f"\n| *{avg}* | {report[avg]['precision']:.4f} | {report[avg]['recall']:.4f} | "
            f"{report[avg]['f1-score']:.4f} | {int(report[avg]['support'])} |"
        )
    return rows


def int8_lines(int8: dict | None) -> str:
    """The quantized models' lines of the test metrics ("" without --int8)."""
    if not int8:
        return ""
    lines = (
        f"\n- INT8 ONNX (`model.int8.onnx`): test accuracy {int8['test_accuracy']:.4f}, "
        f"argmax agreement with float {int8['argmax_agreement']:.4f}, "
        f"{'published' if int8.get('published') else 'not published: ' + int8.get('reason', '')}"
    )
    vnni = int8.get("vnni")
    if vnni is None:
        return lines
    return lines + (
        "\n- INT8 ONNX for CPUs with VNNI (`model.int8-vnni.onnx`, 8-bit weights; wrong results without VNNI, "
        "so the predictor refuses it there): "
        + (
            f"test accuracy {vnni['test_accuracy']:.4f}, measured on {vnni['measured_on']}, published"
            if vnni.get("published")
            else "not published: " + vnni.get("reason", "")
        )
    )


def model_section(run: RunRecord) -> str:
    """The card's "Model" section: what was trained, how, and the files and serving it comes with."""
    model, optim, inputs = run.model, run.optim, run.inputs
    augmentation = f"random crop (pad {inputs.crop_padding}) + alternating flip" if inputs.augment else "none"
    savedmodel = SAVEDMODEL_DIRS[run.layout] if SAVEDMODEL_DIRS[run.layout] != "." else "the run folder itself"
    return f"""## Model
- Architecture: {MODEL_DESCRIPTIONS.get(model.name, model.name)}
- Preset `{run.preset}`; {optim.epochs} epochs, batch {optim.batch_size}, optimizer {optim.optimizer}
  (learning rate {optim.learning_rate:g}), label smoothing {optim.label_smoothing:g},
  augmentation {augmentation}, test-time augmentation {TTA_LEVELS[run.tta_level]} (level {run.tta_level}), seed {inputs.seed}.
- Files: `model.keras` (Keras), the SavedModel in `{savedmodel}`
  (TensorFlow, signature `serving_default`), `model.onnx` (ONNX opset {OPSET}; its contract: docs/model-contract.md).
- Serving: `python -m job runs export-serving STORE {run.run_id} DEST` writes a Triton / KServe model repository;
  in a browser, open `examples/web/index.html?model=<URL of model.onnx>` (onnxruntime-web, docs/model-contract.md).
"""


def parity_section(parity: dict) -> str:
    return f"""## Parity (exported models vs Keras)
- ONNX Runtime: max |Δprob| {parity["onnxruntime"]["max_abs_diff"]:.2e}, argmax agreement
  {parity["onnxruntime"]["argmax_agreement"]:.4f} on {parity["onnxruntime"]["samples"]} images
- SavedModel: max |Δprob| {parity["savedmodel"]["max_abs_diff"]:.2e}, argmax agreement
  {parity["savedmodel"]["argmax_agreement"]:.4f}
- Gate: max |Δprob| ≤ {parity["tolerance"]:g} and no argmax difference, on the test split and random
  uint8 batches of sizes {", ".join(str(n) for n in parity["random_batch_sizes"])}.
"""


def render(run: RunRecord, metrics: dict) -> str:
    names = metrics["data"]["class_names"]
    sizes = metrics["data"]["sizes"]
    report = metrics["classification_report"]
    rows = class_table(report, names)
    weak = ", ".join(f"{c} (F1 {f:.2f})" for c, f in weak_classes(metrics, names))
    confusions = ", ".join(f"{a} → {b} ({k})" for a, b, k in top_confusions(metrics["confusion_matrix"], names))
    int8_line = int8_lines(metrics.get("int8"))
    return (
        front_matter(run.run_id, metrics)
        + f"""# Model card: CIFAR-10 classifier, run `{run.run_id}`

{model_section(run)}
## Data and splits
- Source: `{metrics["data"]["source"]}` (sha256 `{metrics["data"]["source_sha256"][:16]}…`)
- Classes ({len(names)}): {", ".join(names)}
- Splits (stratified, seed {metrics["data"]["seed"]}): train {sizes["train"]}, validation {sizes["val"]},
  test {sizes["test"]} ({metrics["data"]["test_split"]}). The test split was never used for training or
  model selection.

## Preprocessing
Inputs are raw RGB pixels, uint8, shape `[N, 32, 32, 3]`. The exported graphs divide by 255 themselves;
callers must not normalise. Images of another size must be resized to 32x32 first (the ONNX predictor
uses a bilinear filter).

## Test metrics (held-out test split)
- Keras: accuracy **{metrics["test_accuracy"]:.4f}**, loss {metrics["test_loss"]:.4f}
- ONNX Runtime (what downstream users get): accuracy **{metrics["onnx_test_accuracy"]:.4f}**{int8_line}

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

![confusion matrix]({CONFUSION_MATRIX})

The test images it got most confidently wrong: ![misclassified]({MISCLASSIFIED})

{parity_section(metrics["parity"])}
## Intended use
Classifying small (32x32) natural images into the {len(names)} CIFAR-10 classes; a baseline and a
reference for serving and export pipelines.

## Limitations
- Trained on 32x32 CIFAR-10 images only: larger photos lose detail when shrunk; images of other classes
  are still forced into one of the {len(names)} classes (there is no "unknown" output).
- Weakest classes on the test split: {weak}.
- Most frequent confusions (true → predicted): {confusions or "none"}.
- Probabilities are not calibrated; do not treat them as certainties.
"""
    )


def write_model_card(run_dir: Path, run: RunRecord, metrics: dict) -> None:
    (run_dir / MODEL_CARD).write_text(render(run, metrics))
