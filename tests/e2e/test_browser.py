"""The browser consumer (examples/web) in a real headless Chromium (Debian's package, driven by playwright-core),
served from a local HTTP server on 127.0.0.1: its probabilities on real CIFAR-10 JPEGs from the shared data equal
the Python predictor's within 1e-4 at 32x32, and agree on the top class for resized images. A screenshot of the
page with a prediction is kept in test-artifacts/browser.png."""

import io
import json
import os
import shutil
import subprocess
import tarfile
from urllib.parse import quote

import numpy as np
import pytest
from forked import run_forked
from PIL import Image

from helpers import ROOT, class_image, job_env, needs, page_runs, static_server

WEB = ROOT / "examples" / "web"
SHARED = ROOT.parent / "shared" / "data" / "cifar10-jpeg-train.tar.gz"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _require(condition: bool, why: str) -> None:
    needs(condition, why, "apt-get install chromium; npm ci in examples/web")


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
    server, base = static_server(root)
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
    """`job predict --json` (no TensorFlow) as a forked child of the pre-imported zygote (tests/forked.py)."""
    argv = ["predict", str(served["model"]), *map(str, paths), "--json", "--top-k", "10"]
    proc = run_forked(argv, env=job_env(), cwd=ROOT, timeout=300)[0]
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
    assert "3 class names for 2 model outputs" in result["error"]
    assert io  # the page reports the one-line reason instead of predicting


# ------------------------------------------------------------------------------------------- hostile models
# A model loads from any URL (?model=, CORS): its class names are the page's only model-supplied text.

MARKUP = ['<img src=x onerror="window.__injected=1">', '<svg onload="window.__injected=2">', "a & <b>bold</b>"]


@pytest.fixture(scope="module")
def page_only(tmp_path_factory):
    """The page served with a folder for test models and one 32x32 JPEG; no trained model needed."""
    _require(os.path.exists(CHROMIUM), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    _require((WEB / "node_modules" / "playwright-core").is_dir(), "examples/web/node_modules missing (npm ci)")
    _require(shutil.which("node") is not None, "node is not installed")
    root = tmp_path_factory.mktemp("www-hostile")
    (root / "web").symlink_to(WEB)
    (root / "contract").symlink_to(ROOT / "examples" / "contract")
    (root / "files").mkdir()
    Image.fromarray(class_image(2, np.random.default_rng(0))).save(root / "files" / "cat.jpg", quality=90)
    server, base = static_server(root)
    yield {"base": base, "root": root}
    server.terminate()
    server.wait(timeout=10)


def _web_model(path, **knobs):
    """helpers.contract_model at an IR version that onnxruntime-web reads (it reads up to 13)."""
    import onnx

    from helpers import contract_model

    model = onnx.load(contract_model(path, **knobs))
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _page_results(page_only, models: list) -> list[dict]:
    """The page with ?model=<model>&image=cat.jpg for each model: one result each."""
    base = page_only["base"]
    image = quote(f"{base}/files/cat.jpg", safe="")
    return page_runs(
        [f"{base}/web/index.html?model={quote(f'{base}/files/{m.name}', safe='')}&image={image}" for m in models]
    )


@pytest.fixture(scope="module")
def hostile_pages(page_only) -> dict:
    """Every hostile-names model of this module (MARKUP and REFUSED), each in the page once, in one Chromium."""
    files = page_only["root"] / "files"
    models = {"markup": _web_model(files / "markup.onnx", classes=3, class_names=MARKUP)}
    for i, (names, _) in enumerate(REFUSED):
        models[json.dumps(names)] = _web_model(files / f"bad-{i}.onnx", classes=2, class_names=names)
    return dict(zip(models, _page_results(page_only, list(models.values())), strict=True))


def test_class_names_that_are_markup_are_shown_as_text_and_run_nothing(hostile_pages):
    result = hostile_pages["markup"]
    page = result["page"]
    print(f"markup class names in the page: {page}")
    assert "error" not in result, result
    assert sorted(page["names"]) == sorted(MARKUP)  # the bars show the very characters, as text
    assert set(result["probabilities"]) == set(MARKUP)
    assert page["injected"] is None  # no onerror / onload handler ran
    assert page["img"] == page["svg"] == page["iframe"] == page["inline_script"] == 0  # no element was injected


REFUSED = [
    (["cat", "dog\nerror: forged"], "control, line-break or format character"),
    (["cat", "Cat"], "are the same name"),
    (["cat", "dog\u202egnp.exe"], "control, line-break or format character"),
    (["cat", " dog"], "white space"),
    (["cat", "x" * 65], "longer than 64"),
    (["cat", 7], "not a string"),
]
REFUSED_IDS = ["line break", "duplicate by case", "bidi override", "leading space", "65 characters", "a number"]


@pytest.mark.parametrize("names,says", REFUSED, ids=REFUSED_IDS)
def test_class_names_the_job_refuses_are_refused_in_the_page(hostile_pages, names, says):
    result = hostile_pages[json.dumps(names)]
    assert says in result.get("error", ""), result
    assert "does not follow the model contract" in result["error"]
    assert result["page"]["names"] == [] and result["page"]["injected"] is None


def _rule_images(folder) -> dict:
    """The images where decoders disagree unless one rule is applied: EXIF orientation, transparency, a palette
    with a transparent entry, 16 bits. 32x32 (nothing resized: the comparison is exact) and one larger of each."""
    from hostile_images import png_16bit

    folder.mkdir()
    rng = np.random.default_rng(21)
    paths = {}
    for size, tag in (((32, 32), "32"), ((56, 40), "big")):
        base = np.concatenate([class_image(c, rng, size) for c in (2, 7)], axis=1)[:, : size[0]]
        exif = Image.Exif()
        exif[0x0112] = 6  # stored sideways: upright after a quarter turn clockwise
        paths[f"rotated-exif-{tag}.jpg"] = lambda p, b=base, e=exif: Image.fromarray(b).save(
            p, quality=95, exif=e.tobytes()
        )
        alpha = np.tile(np.linspace(0, 255, size[0], dtype=np.uint8), (size[1], 1))
        rgba = np.dstack([base, alpha])
        rgba[: size[1] // 4, :, :3] = rng.integers(0, 256, (size[1] // 4, size[0], 3))  # colour under alpha 0 too
        rgba[: size[1] // 4, :, 3] = 0
        paths[f"transparent-{tag}.png"] = lambda p, a=rgba: Image.fromarray(a, "RGBA").save(p)
        palette = Image.fromarray(base).quantize(32)
        paths[f"palette-{tag}.png"] = lambda p, im=palette: im.save(p, transparency=0)
    paths["sixteen-bit-32.png"] = lambda p: p.write_bytes(png_16bit(seed=4))
    out = {}
    for name, save in paths.items():
        save(folder / name)
        out[name] = folder / name
    return out


def test_page_node_and_predictor_apply_the_one_preprocessing_rule(served):
    """EXIF orientation, transparency over white, palette transparency, 16-bit: the page (real Chromium), the Node
    consumer and `job predict --json` give the same probabilities (32x32: within 1e-4; larger images, where each
    resizes with its own bilinear filter: within 0.02 and the same top class)."""
    images = _rule_images(served["root"] / "files" / "rule")
    paths = list(images.values())
    browser, _ = _browser(served, paths)
    python = _python(served, paths)
    rows = {"page": browser}
    node_dir = ROOT / "examples" / "node"
    if (node_dir / "node_modules" / "sharp").is_dir():
        proc = subprocess.run(
            ["node", str(node_dir / "classify.mjs"), str(served["model"]), *map(str, paths)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        rows["node"] = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    else:
        _require(False, "examples/node/node_modules missing (npm ci)")
    worst = {}
    for consumer, results in rows.items():
        for path, other, mine in zip(paths, results, python, strict=True):
            dp = max(abs(other["probabilities"][c] - v) for c, v in mine["probabilities"].items())
            key = (consumer, "32" if "-32." in path.name else "resized")
            worst[key] = max(worst.get(key, 0.0), dp)
            assert other["top"][0]["class"] == mine["top"][0]["class"], (consumer, path.name)
    print(
        "one preprocessing rule, max |dp| against job predict: "
        + ", ".join(f"{k[0]} {k[1]} {v:.2e}" for k, v in worst.items())
    )
    assert all(v <= 1e-4 for (_, kind), v in worst.items() if kind == "32")
    assert all(v <= 0.02 for v in worst.values())
