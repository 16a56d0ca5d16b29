"""Downstream consumers of model.onnx: the contract, the ONNX-only predictor, the model card, Node.js."""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from no_tensorflow import PRELUDE as NO_TENSORFLOW
from PIL import Image

from helpers import CLASSES, ROOT, add_tar_member, class_image, job_env, run_job

NODE_DIR = ROOT / "examples" / "node"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    for i in range(4):
        Image.fromarray(class_image(i, rng)).save(d / f"img{i}.png")
    Image.fromarray(class_image(5, rng)).convert("L").resize((64, 48)).save(d / "gray_big.jpg")
    Image.fromarray(class_image(6, rng)).convert("RGBA").save(d / "rgba.png")
    Image.fromarray(class_image(7, rng)).convert("P").save(d / "palette.gif")
    return d


def predict(*args, env=None):
    return run_job("predict", *args, env=env)


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_contract_of_a_fresh_export(trained_run):
    import onnx
    import onnxruntime as ort

    from job import contract

    path = trained_run["dir"] / "model.onnx"
    model = onnx.load(path)
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == contract.OPSET
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), outs = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("image", "tensor(uint8)", [32, 32, 3])
    assert isinstance(inp.shape[0], str) or inp.shape[0] is None  # dynamic batch
    assert [o.name for o in outs] == ["probabilities"] and outs[0].type == "tensor(float)"
    meta = session.get_modelmeta().custom_metadata_map
    assert set(meta) == set(contract.METADATA_KEYS)
    metrics = json.loads((trained_run["dir"] / "metrics.json").read_text())
    assert json.loads(meta["class_names"]) == metrics["data"]["class_names"]
    assert meta["run_id"] == "tiny-1" and float(meta["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])
    assert {"tensorflow-cpu", "tf2onnx", "onnx"} <= set(json.loads(meta["versions"]))
    probs = session.run(None, {"image": np.zeros((5, 32, 32, 3), np.uint8)})[0]
    assert probs.shape == (5, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert contract.check_session(session) == metrics["data"]["class_names"]


def test_predictor_runs_where_tensorflow_cannot_be_imported(trained_run, images):
    code = NO_TENSORFLOW + "from job.cli import main; sys.exit(main(['predict'] + sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(trained_run["dir"]), str(images / "img0.png")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(str(images / "img0.png") + ": ")


def test_every_input_kind_and_mode(trained_run, images, tmp_path):
    with tarfile.open(tmp_path / "imgs.tar.gz", "w:gz") as tar:
        tar.add(images / "img1.png", arcname="a/img1.png")
    proc = predict(
        str(trained_run["dir"] / "model.onnx"),
        str(images),
        str(tmp_path / "imgs.tar.gz"),
        str(images / "img3.png"),
        "--json",
        "--top-k",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    rows = json_lines(proc.stdout)
    assert len(rows) == 7 + 1 + 1
    by_name = {r["input"].split("/")[-1]: r for r in rows if ".tar.gz:" not in r["input"]}
    from_tar = [r for r in rows if r["input"].endswith("imgs.tar.gz:a/img1.png")]
    assert "resized from 64x48" in by_name["gray_big.jpg"]["note"] and by_name["img0.png"]["note"] is None
    for r in rows:
        assert len(r["top"]) == 2 and list(r["probabilities"]) == CLASSES and r["run_id"] == "tiny-1"
        assert r["top"][0]["probability"] == max(r["probabilities"].values())
        assert r["probabilities"][r["top"][0]["class"]] == r["top"][0]["probability"]
    assert len(from_tar) == 1
    assert from_tar[0]["probabilities"] == pytest.approx(by_name["img1.png"]["probabilities"])


def test_predictor_matches_onnxruntime_on_the_same_pixels(trained_run, images):
    import onnxruntime as ort

    proc = predict(str(trained_run["dir"]), str(images / "img0.png"), "--json")
    got = np.array(list(json_lines(proc.stdout)[0]["probabilities"].values()), np.float32)
    x = np.asarray(Image.open(images / "img0.png").convert("RGB"))[None]
    session = ort.InferenceSession(str(trained_run["dir"] / "model.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"image": x})[0][0] - got).max() <= 1e-6


def test_bad_inputs_get_one_line_each_and_good_ones_are_still_predicted(trained_run, images, tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    raw = (images / "img0.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(raw[: len(raw) // 2])
    bad_tar = tmp_path / "bad.tar"
    with tarfile.open(bad_tar, "w") as tar:
        tar.add(images / "img1.png", arcname="ok.png")
    add_tar_member(bad_tar, "../escape.png", raw)
    proc = predict(
        str(trained_run["dir"]),
        str(tmp_path / "text.png"),
        str(tmp_path / "trunc.png"),
        str(tmp_path / "missing.png"),
        str(bad_tar),
        str(images / "img0.png"),
    )
    assert proc.returncode == 3
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 4
    assert any("text.png: not an image" in e for e in errors) and any("trunc.png" in e for e in errors)
    assert any("missing.png: no such file" in e for e in errors) and any("escape.png" in e for e in errors)
    predicted = [line.split(":")[0] for line in proc.stdout.splitlines()]
    assert predicted == [str(bad_tar), str(images / "img0.png")]


def test_bad_model_files_exit_8(images, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    (tmp_path / "junk.onnx").write_bytes(os.urandom(300))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "foreign.onnx")
    for model, fragment in (
        (tmp_path / "junk.onnx", "not a loadable ONNX model"),
        (tmp_path / "foreign.onnx", "does not follow the model contract"),
        (tmp_path / "none.onnx", "not found"),
    ):
        proc = predict(str(model), str(images / "img0.png"))
        assert proc.returncode == 8 and fragment in proc.stderr and proc.stdout == ""


def test_model_from_s3(trained_run, images, bucket, s3_env):
    from job.storage.s3client import make_client

    """A published run (verified against its manifest), its store (through latest.json) and a bare object."""
    published = run_job("publish", str(trained_run["dir"]), f"s3://{bucket}/runs", env=s3_env)
    assert published.returncode == 0, published.stderr
    make_client().upload_file(str(trained_run["dir"] / "model.onnx"), bucket, "bare/model.onnx")
    local = predict(str(trained_run["dir"]), str(images / "img0.png"), "--json")
    for uri in (f"s3://{bucket}/runs/tiny-1", f"s3://{bucket}/runs", f"s3://{bucket}/bare/model.onnx"):
        remote = predict(uri, str(images / "img0.png"), "--json", env=s3_env)
        assert remote.returncode == 0, remote.stderr
        assert json_lines(remote.stdout)[0]["probabilities"] == json_lines(local.stdout)[0]["probabilities"]


def test_model_card_matches_metrics(trained_run):
    run = trained_run["dir"]
    card = (run / "MODEL_CARD.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"accuracy **{metrics['test_accuracy']:.4f}**" in card
    assert f"accuracy **{metrics['onnx_test_accuracy']:.4f}**" in card
    for cls in metrics["data"]["class_names"]:
        row = metrics["classification_report"][cls]
        assert f"| {cls} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1-score']:.4f} |" in card
    assert f"{metrics['parity']['onnxruntime']['max_abs_diff']:.2e}" in card
    assert "tiny-1" in card and "confusion_matrix.png" in card and "Limitations" in card
    sizes = metrics["data"]["sizes"]
    assert re.search(rf"train {sizes['train']}, validation {sizes['val']}", card)


def _node_ready() -> bool:
    return shutil.which("node") is not None and (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir()


needs_node = pytest.mark.skipif(
    not _node_ready() and shutil.which("npm") is None,
    reason="examples/node is not installed and this machine has no npm (make test installs it where npm exists)",
)


@needs_node
def test_node_consumer_agrees_with_the_python_predictor(trained_run, images):
    pngs = [str(images / f"img{i}.png") for i in range(4)]
    py = predict(str(trained_run["dir"] / "model.onnx"), *pngs, "--json")
    node = subprocess.run(
        ["node", str(NODE_DIR / "classify.mjs"), str(trained_run["dir"] / "model.onnx"), *pngs],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert node.returncode == 0, node.stderr
    py_rows, node_rows = json_lines(py.stdout), json_lines(node.stdout)
    assert [r["input"] for r in node_rows] == pngs
    for a, b in zip(py_rows, node_rows, strict=True):
        assert list(a["probabilities"]) == list(b["probabilities"])  # the same class names, in the model's order
        assert (
            np.abs(np.array(list(a["probabilities"].values())) - np.array(list(b["probabilities"].values()))).max()
            <= 1e-5
        )
        assert a["top"][0]["class"] == b["top"][0]["class"]  # class names read from the file by both


def test_a_store_root_is_followed_to_its_latest_run(trained_run, images):
    """Locally here; on S3 in test_model_from_s3."""
    local = predict(str(trained_run["out"]), str(images / "img0.png"), "--json")
    assert local.returncode == 0, local.stderr
    assert json_lines(local.stdout)[0]["run_id"] == "tiny-1"


def test_images_from_standard_input(trained_run, images, tmp_path):
    def run(data: bytes):
        return subprocess.run(
            [sys.executable, "-m", "job", "predict", str(trained_run["dir"]), "-", "--json"],
            input=data,
            capture_output=True,
            cwd=ROOT,
            env=job_env(),
            timeout=120,
        )

    one = run((images / "img0.png").read_bytes())
    assert one.returncode == 0, one.stderr
    assert [r["input"] for r in json_lines(one.stdout.decode())] == ["-"]
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        tar.add(images / "img0.png", arcname="a.png")
        tar.add(images / "img1.png", arcname="b.png")
    many = run((tmp_path / "s.tar").read_bytes())
    assert [r["input"] for r in json_lines(many.stdout.decode())] == ["-:a.png", "-:b.png"]
    (tmp_path / "notes.txt").write_text("no images")
    with tarfile.open(tmp_path / "none.tar", "w") as tar:  # a tar stream holding no images: a data error, like a folder
        tar.add(tmp_path / "notes.txt", arcname="notes.txt")
    none = run((tmp_path / "none.tar").read_bytes())
    errors = [line for line in none.stderr.decode().splitlines() if line.startswith("error:")]
    assert none.returncode == 3 and none.stdout == b"" and b"Traceback" not in none.stderr, none.stderr
    assert len(errors) == 1 and errors[0].startswith("error: data error: -: the tar stream holds no images"), errors


def test_a_16_bit_png_predicts_like_its_8_bit_twin(trained_run, tmp_path):
    """A 16-bit grey PNG (Pillow mode I;16): the image gate keeps the high byte of each sample, so `job predict`
    gives exactly its 8-bit twin's probabilities (before the gate it decoded as all white)."""
    grey8 = class_image(3, np.random.default_rng(5))[..., 1]
    Image.fromarray(grey8).save(tmp_path / "eight.png")
    Image.fromarray((grey8.astype(np.uint16) << 8) | 0x7F).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode == "I;16"
    proc = predict(str(trained_run["dir"]), str(tmp_path / "eight.png"), str(tmp_path / "sixteen.png"), "--json")
    assert proc.returncode == 0, proc.stderr
    eight, sixteen = json_lines(proc.stdout)
    assert eight["probabilities"] == sixteen["probabilities"]


def test_a_closed_stdout_ends_the_predictor_quietly(trained_run, images):
    shell = f"{sys.executable} -m job predict {trained_run['dir']} {images} {images} {images} | head -1"
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, cwd=ROOT, env=job_env(), timeout=120
    )
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_the_model_card_front_matter_is_what_hubs_read(trained_run):
    from huggingface_hub import ModelCard

    card = ModelCard.load(trained_run["dir"] / "MODEL_CARD.md")
    data = card.data.to_dict()
    metrics = json.loads((trained_run["dir"] / "metrics.json").read_text())
    assert (data["library_name"], data["pipeline_tag"]) == ("onnx", "image-classification")
    assert data["datasets"] == ["cifar10"] and data["metrics"] == ["accuracy"]
    (result,) = card.data.eval_results[:1]
    assert (result.task_type, result.dataset_type, result.metric_type) == (
        "image-classification",
        "cifar10",
        "accuracy",
    )
    assert result.metric_value == pytest.approx(metrics["test_accuracy"])
    print("model card front matter:\n" + (trained_run["dir"] / "MODEL_CARD.md").read_text().split("\n---\n")[0])


@needs_node
def test_node_consumer_on_jpeg_and_png_of_any_size(trained_run, tmp_path):
    """32x32 inputs (PNG and JPEG): Node and Python agree to 1e-5. Resized inputs: both use a bilinear (triangle)
    filter, from different libraries (libvips, Pillow), so the agreement is measured and reported."""
    rng = np.random.default_rng(11)
    exact, resized = [], []
    for i in range(6):
        Image.fromarray(class_image(i, rng)).save(tmp_path / f"e{i}.png")
        Image.fromarray(class_image(i, rng)).save(tmp_path / f"e{i}.jpg", quality=90)
        exact += [str(tmp_path / f"e{i}.png"), str(tmp_path / f"e{i}.jpg")]
        big = Image.fromarray(class_image(i, rng)).resize((32 + 16 * i, 40 + 8 * i), Image.Resampling.NEAREST)
        big.save(tmp_path / f"r{i}.jpg", quality=85)
        big.convert("RGBA").save(tmp_path / f"r{i}.png")
        resized += [str(tmp_path / f"r{i}.jpg"), str(tmp_path / f"r{i}.png")]

    def both(paths):
        py = json_lines(predict(str(trained_run["out"]), *paths, "--json").stdout)
        node = subprocess.run(
            ["node", str(NODE_DIR / "classify.mjs"), str(trained_run["out"]), *paths],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert node.returncode == 0, node.stderr
        rows = json_lines(node.stdout)
        diffs = [
            max(abs(a["probabilities"][c] - b["probabilities"][c]) for c in a["probabilities"])
            for a, b in zip(py, rows, strict=True)
        ]
        agree = np.mean([a["top"][0]["class"] == b["top"][0]["class"] for a, b in zip(py, rows, strict=True)])
        return max(diffs), float(agree), rows

    exact_diff, _, _ = both(exact)
    resized_diff, agreement, rows = both(resized)
    print(
        f"node vs python: 32x32 max |dp| {exact_diff:.2e}; resized max |dp| {resized_diff:.2e}, "
        f"top-1 agreement {agreement:.0%} on {len(resized)} images"
    )
    assert exact_diff <= 1e-5
    assert all(r["note"].startswith("resized from") for r in rows) and all(r["run_id"] == "tiny-1" for r in rows)


@needs_node
def test_node_consumer_help_and_one_line_errors(trained_run, tmp_path):
    node = ["node", str(NODE_DIR / "classify.mjs")]
    assert subprocess.run([*node, "--help"], capture_output=True, timeout=60).returncode == 0
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    proc = subprocess.run(
        [*node, str(trained_run["dir"]), str(tmp_path / "bad.jpg"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 3 and len(errors) == 2 and all(e.startswith("error: data error:") for e in errors)
    missing = subprocess.run(
        [*node, str(tmp_path / "nope"), str(tmp_path / "bad.jpg")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 8 and missing.stderr.startswith("error: model error:")
