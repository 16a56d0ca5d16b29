"""The browser consumer (examples/web) in a real headless Chromium (Debian's package, driven by playwright-core),
served from a local HTTP server on 127.0.0.1: its probabilities on real CIFAR-10 JPEGs from the shared data equal
the Python predictor's within 1e-4 at 32x32, and agree on the top class for resized images. A screenshot of the
page with a prediction is kept in test-artifacts/browser.png."""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, class_image, run_job
from s3_server import free_port

WEB = ROOT / "examples" / "web"
SHARED = ROOT.parent / "shared" / "data" / "cifar10-jpeg-train.tar.gz"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _require(condition: bool, why: str) -> None:
    if not condition:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(why)  # CI installs both (.ci/run, Makefile)


def _real_jpegs(folder, count: int = 8) -> list:
    """32x32 JPEGs as they are in the shared data (a few classes), else JPEGs made here."""
    folder.mkdir()
    paths = []
    if SHARED.is_file():
        with tarfile.open(SHARED) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".jpg") and member.name.endswith(("0000.jpg", "0001.jpg")):
                    path = folder / member.name.replace("/", "_")
                    path.write_bytes(tar.extractfile(member).read())
                    paths.append(path)
                    if len(paths) == count:
                        break
    rng = np.random.default_rng(0)
    while len(paths) < count:
        path = folder / f"made-{len(paths)}.jpg"
        Image.fromarray(class_image(len(paths) % 10, rng)).save(path, quality=75)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def served(trained_run, tmp_path_factory):
    _require(os.path.exists(CHROMIUM), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    _require((WEB / "node_modules" / "playwright-core").is_dir(), "examples/web/node_modules missing (npm ci)")
    _require(shutil.which("node") is not None, "node is not installed")
    root = tmp_path_factory.mktemp("www")
    (root / "web").symlink_to(WEB)
    (root / "contract").symlink_to(ROOT / "examples" / "contract")
    files = root / "files"
    files.mkdir()
    shutil.copy(trained_run["dir"] / "model.onnx", files / "model.onnx")
    jpegs = _real_jpegs(files / "jpeg")
    resized = []
    for i, src in enumerate(jpegs[:3]):  # upscaled photos of other sizes, JPEG and PNG
        big = Image.open(src).resize((96 + 8 * i, 72), Image.Resampling.BICUBIC)
        path = files / f"big-{i}.{'png' if i % 2 else 'jpg'}"
        big.save(path)
        resized.append(path)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/web/index.html", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    yield {"base": base, "root": root, "jpegs": jpegs, "resized": resized, "model": files / "model.onnx"}
    server.terminate()
    server.wait(timeout=10)


def _browser(served, paths):
    urls = [f"{served['base']}/{p.relative_to(served['root']).as_posix()}" for p in paths]
    shot = ROOT / "test-artifacts" / "browser.png"
    shot.parent.mkdir(exist_ok=True)
    proc = subprocess.run(
        [
            "node",
            str(WEB / "run-in-chromium.mjs"),
            f"{served['base']}/web/index.html",
            f"{served['base']}/files/model.onnx",
            str(shot),
            *urls,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=WEB,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(paths) and all("error" not in r for r in results), proc.stdout + proc.stderr
    return results, shot


def _python(served, paths):
    proc = run_job("predict", str(served["model"]), *map(str, paths), "--json", "--top-k", "10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_the_browser_predicts_what_the_python_predictor_predicts(served):
    browser, shot = _browser(served, served["jpegs"])
    python = _python(served, served["jpegs"])
    worst = 0.0
    for b, p in zip(browser, python, strict=True):
        assert b["resized"] is None and b["run_id"] == p["run_id"]
        worst = max(worst, max(abs(b["probabilities"][c] - v) for c, v in p["probabilities"].items()))
    print(f"browser vs Python predictor on {len(browser)} real 32x32 JPEGs: max |dp| = {worst:.2e}; screenshot {shot}")
    assert worst <= 1e-4
    assert shot.stat().st_size > 5000 and Image.open(shot).size[0] == 800


def test_resized_images_agree_on_the_top_class(served):
    browser, _ = _browser(served, served["resized"])
    python = _python(served, served["resized"])
    agree = sum(b["top"][0]["class"] == p["top"][0]["class"] for b, p in zip(browser, python, strict=True))
    print(f"resized images: top-1 agreement {agree}/{len(browser)}; sizes {[b['resized'] for b in browser]}")
    assert all(b["resized"] for b in browser) and agree == len(browser)


def test_a_model_that_breaks_the_contract_is_refused_in_the_page(served, tmp_path):
    from helpers import contract_model

    bad = contract_model(served["root"] / "files" / "bad.onnx", classes=2, class_names=["a", "b", "c"])
    proc = subprocess.run(
        [
            "node",
            str(WEB / "run-in-chromium.mjs"),
            f"{served['base']}/web/index.html",
            f"{served['base']}/files/{bad.name}",
            str(tmp_path / "s.png"),
            f"{served['base']}/files/jpeg/{served['jpegs'][0].name}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=WEB,
    )
    (result,) = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert "class_names lists 3 classes but the output has 2 columns" in result["error"]
    assert io  # the page reports the one-line reason instead of predicting
