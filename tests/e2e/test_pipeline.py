"""End to end on tiny synthetic data: every artifact, the manifest, ONNX without TensorFlow, the gates."""

import csv
import json
import subprocess
import sys

import pytest

from helpers import ROOT, job_run_once, run_job, train_args
from job.storage.files import sha256_file
from job.storage.runs import local_manifest_problems as verify_manifest

EXPECTED_FILES = {
    "misclassified.png",
    "model.keras",
    "model.onnx",
    "metrics.json",
    "classification_report.txt",
    "curves.png",
    "confusion_matrix.png",
    "history.csv",
    "config.json",
    "manifest.json",
    "MODEL_CARD.md",
}


def test_run_folder_holds_every_artifact(trained_run):
    run = trained_run["dir"]
    names = {p.name for p in run.iterdir()}
    assert EXPECTED_FILES <= names and (run / "saved_model" / "saved_model.pb").is_file()
    hidden = [p.name for p in trained_run["out"].iterdir() if p.name.startswith(".")]
    assert hidden == [".latest.lock"]  # no staging left; the pointer's lock file stays (a stable lock target)


def test_manifest_lists_every_file_with_its_hash(trained_run):
    run = trained_run["dir"]
    manifest = json.loads((run / "manifest.json").read_text())
    listed = {f["path"]: f for f in manifest["files"]}
    on_disk = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(listed) == on_disk and "saved_model/saved_model.pb" in listed
    for rel, entry in listed.items():
        assert entry["sha256"] == sha256_file(run / rel) and entry["bytes"] == (run / rel).stat().st_size
    assert verify_manifest(run) == []


def test_metrics_config_and_history_are_consistent(trained_run):
    run = trained_run["dir"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run_id"] == "tiny-1" and metrics["data"]["sizes"] == {"train": 100, "val": 10, "test": 10}
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and len(metrics["confusion_matrix"]) == 10
    assert sum(map(sum, metrics["confusion_matrix"])) == 10
    for cls in ("airplane", "truck", "macro avg", "weighted avg"):
        assert {"precision", "recall", "f1-score", "support"} <= set(metrics["classification_report"][cls])
    parity = metrics["parity"]
    assert parity["onnxruntime"]["max_abs_diff"] <= 1e-4 and parity["onnxruntime"]["argmax_mismatches"] == 0
    assert parity["onnxruntime"]["samples"] == 10 + 1 + 7 + 256
    assert parity["savedmodel"]["argmax_agreement"] == 1.0
    assert set(metrics["durations_s"]) >= {"data", "train", "evaluate", "export", "verify", "total"}
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 1 and config["sources"]["epochs"] == "--epochs"
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert len(rows) == 1 and {"accuracy", "loss", "val_accuracy", "val_loss"} <= set(rows[0])
    assert "precision" in (run / "classification_report.txt").read_text()
    summary = trained_run["summary"]
    assert summary["event"] == "run_complete" and summary["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    latest = json.loads((trained_run["out"] / "latest.json").read_text())
    assert latest["run_id"] == "tiny-1"


def test_pngs_are_real_images(trained_run):
    from PIL import Image

    for name in ("curves.png", "confusion_matrix.png", "misclassified.png"):
        with Image.open(trained_run["dir"] / name) as im:
            assert im.format == "PNG" and im.size[0] > 400
    metrics = json.loads((trained_run["dir"] / "metrics.json").read_text())
    shown = metrics["misclassified"]
    wrong = sum(map(sum, metrics["confusion_matrix"])) - sum(metrics["confusion_matrix"][i][i] for i in range(10))
    assert len(shown) == min(24, wrong) and all(s["true"] != s["predicted"] for s in shown)
    assert [s["probability"] for s in shown] == sorted((s["probability"] for s in shown), reverse=True)


def test_second_run_reads_the_decode_cache(second_run):
    metrics = json.loads((second_run["run"] / "metrics.json").read_text())
    assert metrics["data"]["from_cache"] is True


def test_quality_gate_fails_with_exit_6_and_publishes_nothing(trained_run, tmp_path):
    out = tmp_path / "store"
    proc = run_job(
        *train_args(str(trained_run["data"]), str(out), cache=str(trained_run["cache"]), epochs=1, min_accuracy="0.999")
    )
    assert proc.returncode == 6
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")][0].count("min-accuracy") == 1
    assert list(out.iterdir()) == []


def test_storage_error_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_job("train", "--out", str(blocker / "store"), "--data", "/nonexistent")
    assert proc.returncode == 4 and "local store" in proc.stderr and "stage train" not in proc.stderr


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory, worker_id, tiny_tar):
    """A fast-preset run with INT8 exports and TTA level 2: one training for the two tests that read it (the INT8
    exports, the TTA level's metadata), built once per test run (xdist workers share it)."""

    def argv(base):
        # float32 whatever this CPU is (auto picks it on every CPU without AMX): the training model then is
        # the one with this job's optimizer, which the published model.keras must not carry.
        args = train_args(
            str(tiny_tar),
            str(base / "store"),
            run_id="fast-1",
            cache=str(base / "cache"),
            epochs=1,
            preset="fast",
            width="16",
            int8_max_drop="1.0",
            precision="float32",
            tta_level="2",
        )
        return [*args, "--int8", "--int8-vnni"]

    base, proc = job_run_once(tmp_path_factory, worker_id, "pipeline-int8-run", argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base / "store" / "fast-1"


def test_fast_preset_with_int8_trains_exports_and_passes_parity(int8_run, tmp_path):
    import onnxruntime as ort

    run = int8_run
    code = f"import keras; m = keras.models.load_model({str(run / 'model.keras')!r}); print(m.count_params())"
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-2000:]  # a consumer without this job's code loads it
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["training"]["precision"] == "float32"
    assert metrics["parity"]["onnxruntime"]["argmax_mismatches"] == 0
    int8 = metrics["int8"]
    assert int8["published"] and int8["calibration_images"] == metrics["data"]["sizes"]["train"]
    session = ort.InferenceSession(str(run / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["tta"] == "true" and json.loads(meta["class_names"])[0] == "airplane"
    assert "int8" in meta["quantization"]
    graph = __import__("onnx").load(run / "model.int8.onnx").graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    # 7-bit weights: no int16 saturation in ONNX Runtime's u8 x s8 kernels on x86 CPUs without VNNI
    from onnx import TensorProto, numpy_helper

    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == TensorProto.INT8 and t.dims]
    assert weights and max(int(abs(w.astype(int)).max()) for w in weights) <= 64
    assert "model.int8.onnx" in {f["path"] for f in json.loads((run / "manifest.json").read_text())["files"]}
    assert "INT8 ONNX" in (run / "MODEL_CARD.md").read_text()
    # the VNNI variant: made and published only where this CPU can check it, and it says what it needs
    from job.runtime.resources import cpu_has

    vnni = int8["vnni"]
    assert vnni["requires_cpu_feature"] == "avx512_vnni|avx_vnni"
    assert vnni["published"] == cpu_has("avx512_vnni|avx_vnni") == (run / "model.int8-vnni.onnx").is_file()
    if vnni["published"]:
        meta = ort.InferenceSession(str(run / "model.int8-vnni.onnx"), providers=["CPUExecutionProvider"])
        assert meta.get_modelmeta().custom_metadata_map["requires_cpu_feature"] == "avx512_vnni|avx_vnni"
        assert "8-bit weights" in meta.get_modelmeta().custom_metadata_map["quantization"]


def test_log_dir_gets_tensorboard_event_files(second_run):
    events = list(second_run["tb"].rglob("events.out.tfevents.*"))
    assert events and any(e.stat().st_size > 0 for e in events)


def test_sagemaker_metric_definitions_read_the_real_log(trained_run):
    """SageMaker extracts metrics from the job's log with the regexes in MetricDefinitions (its tuner and its
    metric charts use them): each must find its value in a real run's output, and the value must be right."""
    import re

    spec = json.loads((ROOT / "infra" / "aws" / "sagemaker-create-training-job.json").read_text())
    definitions = {d["Name"]: d["Regex"] for d in spec["AlgorithmSpecification"]["MetricDefinitions"]}
    log = trained_run["proc"].stderr
    metrics = json.loads((trained_run["dir"] / "metrics.json").read_text())
    final = metrics["training"]["final"]
    expected = {
        "train:loss": final["loss"],
        "train:accuracy": final["accuracy"],
        "validation:loss": final["val_loss"],
        "validation:accuracy": final["val_accuracy"],
        "test:accuracy": metrics["test_accuracy"],
        "test:onnx_accuracy": metrics["onnx_test_accuracy"],
    }
    assert set(definitions) == set(expected)
    for name, regex in definitions.items():
        found = re.findall(regex, log)
        assert found, f"{name}: {regex!r} matches nothing in the log"
        assert float(found[-1]) == pytest.approx(expected[name], abs=1e-4), name


def test_a_vertex_tuning_trial_reports_validation_accuracy_per_epoch(second_run):
    proc = second_run["proc"]
    rows = [json.loads(line) for line in second_run["metric_file"].read_text().splitlines()]
    epochs = [json.loads(line) for line in proc.stdout.splitlines() if json.loads(line)["event"] == "epoch"]
    assert [r["global_step"] for r in rows] == ["1", "2"] and {r["trial"] for r in rows} == {"3"}
    assert [float(r["val_accuracy"]) for r in rows] == pytest.approx([e["val_accuracy"] for e in epochs])


def test_a_final_model_on_all_the_training_images_with_no_validation_split(tmp_path):
    """`--data` holding train/ and test/ and `--val-fraction 0`: every train/ image trains; the curves come from
    the training metrics; the quality gate, the exports and the INT8 choice still run on test/."""
    from helpers import make_image_tree

    data = make_image_tree(tmp_path / "tree", per_class=16, test_per_class=4)
    args = train_args(data, tmp_path / "store", run_id="all-data", cache=tmp_path / "cache", epochs=2)
    proc = run_job(*args, "--preset", "fast", "--width", "8", "--val-fraction", "0", "--int8", "--min-accuracy", "0.01")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "store" / "all-data"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["sizes"] == {"train": 160, "val": 0, "test": 40}
    assert metrics["data"]["test_split"] == "source test split"
    history = (run / "history.csv").read_text().splitlines()
    assert "val_accuracy" not in history[0] and len(history) == 3
    assert (run / "curves.png").stat().st_size > 0 and (run / "model.int8.onnx").is_file() == metrics["int8"][
        "published"
    ]
    assert verify_manifest(run) == []


def test_the_tta_level_is_what_the_model_says_it_is(int8_run, tiny_tar, tmp_path):
    """One setting, airbench's levels: a level-2 export (the INT8 run's, trained with `--tta-level 2`) says so in
    its metadata and its card; the old pair of booleans (which allowed a translate-only model that claimed no TTA)
    is gone; an old config.json maps onto it."""
    out = tmp_path / "store"
    meta = {p.key: p.value for p in __import__("onnx").load(int8_run / "model.onnx").metadata_props}
    assert (meta["tta"], meta["tta_level"]) == ("true", "2")
    assert "test-time augmentation mirror + 1-pixel translations (level 2)" in (int8_run / "MODEL_CARD.md").read_text()
    assert json.loads((int8_run / "config.json").read_text())["tta_level"] == 2
    for flags in (["--no-tta", "--tta-translate"], ["--tta-level", "3"]):
        refused = run_job(*train_args(tiny_tar, out, cache=tmp_path / "cache"), *flags)
        assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    legacy = tmp_path / "old-config.json"
    legacy.write_text(json.dumps({"tta": True, "tta_translate": True, "epochs": 1}))
    shown = run_job("train", "--config", str(legacy), "--print-config")
    assert shown.returncode == 0 and json.loads(shown.stdout)["tta_level"] == 2, shown.stderr
