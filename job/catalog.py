"""The run catalog: `python -m job runs {list,show,download,verify} STORE ...`, on local and S3 stores alike.

    list      one row per run: id, training finish time, preset, Keras/ONNX test accuracy, size, complete or not
    show      a run's metrics summary and its model card
    download  every file of a run, each hashed against the manifest as it streams; renamed into place only
              when all match (exit 3 otherwise, nothing left behind)
    verify    every file of one run or all of them hashed against the manifest; incomplete or changed runs
              are reported (exit 3)

Everything goes through job.storage.runs.RunStore: the same confinement and the same verifier as `predict`.
No TensorFlow is imported.
"""

import sys
from pathlib import Path

from job.errors import DataError
from job.gates.text import json_line, json_text, printable, shown
from job.storage import open_store
from job.storage.layout import MODEL_CARD, json_number, read_metrics
from job.storage.signing import add_trust_arguments, checked_manifest, load_trust, signature_state


def _trust(args):
    """The reader's trust anchor: --public-key / --trust-certificate / JOB_TRUSTED_KEY (None: signing not required)."""
    return load_trust(getattr(args, "public_key", ""), getattr(args, "trust_certificate", ""))


def add_arguments(sub) -> None:
    for name, text in (
        ("list", "list the runs of a store"),
        ("show", "a run's metrics and model card"),
        ("download", "download a run, verifying every sha256"),
        ("verify", "check runs against their manifests (hashing every file)"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("store", help="a local folder or s3://bucket/prefix")
        if name in ("show", "download", "verify"):
            p.add_argument("run", nargs="?" if name == "verify" else None, help="run id ('latest' for latest.json's)")
        if name == "download":
            p.add_argument("dest", help="a folder to download into (created; must be new or empty)")
        if name == "list":
            p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
        if name in ("list", "download", "verify"):
            add_trust_arguments(p)
    p = sub.add_parser(
        "export-serving",
        help="a run as a Triton / KServe model repository",
        description="Write <dest>/triton/<name>/{config.pbtxt, labels.txt, 1/model.onnx} (a Triton model repository: "
        "KServe onnx on its Triton runtime) and <dest>/tensorflow/<name>/1/ (TensorFlow Serving, KServe tensorflow), "
        "every file hash-verified.",
    )
    p.add_argument("store", help="a store or run folder, local or s3://")
    p.add_argument("run", help="run id ('latest' for latest.json's)")
    p.add_argument("dest", help="a new or empty folder, or s3://bucket/prefix")
    p.add_argument("--name", default="cifar10", help="the model's name in the repository (default cifar10)")
    add_trust_arguments(p)


def _store(uri: str):
    store = open_store(uri)  # s3:// with boto3's own endpoint and credentials
    if not uri.startswith("s3://") and not store.location.root.is_dir():
        raise DataError(f"store {uri} is not a folder")
    return store


def _text(value):
    return printable(value) if isinstance(value, str) else None


def summary(store, run: str, trust=None) -> dict:
    try:
        metrics = read_metrics(store, run) or {}
    except DataError:
        metrics = {}
    try:
        manifest = store.manifest(run)  # read once: "complete" and "signature" are about the same manifest
    except DataError:
        manifest = None
    return {
        "run_id": run,
        "finished_at": _text(metrics.get("finished_at")),
        "preset": _text(metrics.get("preset")),
        "test_accuracy": json_number(metrics.get("test_accuracy")),
        "onnx_test_accuracy": json_number(metrics.get("onnx_test_accuracy")),
        "bytes": store.size(run),
        "complete": manifest is not None and not store.problems(run, manifest),
        "signature": signature_state(store, run, trust, manifest),
        "location": store.location.describe(run),
    }


def _latest_or_none(store) -> str | None:
    try:
        return store.latest()
    except DataError:
        return None  # listing goes on; `show latest` / `verify latest` say what is wrong with the pointer


def cmd_list(args) -> int:
    trust = _trust(args)
    store = _store(args.store)
    latest = _latest_or_none(store)
    skipped: list[str] = []
    rows = sorted(
        (summary(store, run, trust) for run in store.runs(skipped)), key=lambda r: r["finished_at"] or "", reverse=True
    )
    for name in skipped:  # escaped (shown): one line each, never a workflow command
        print(f"warning: skipped a folder with an unsafe name: {name}", file=sys.stderr)
    if args.json:
        for row in rows:
            print(json_line({**row, "latest": row["run_id"] == latest}, sort_keys=True))
        return 0
    print(
        f"{'run id':<34} {'finished (UTC)':<21} {'preset':<10} {'keras':>7} {'onnx':>7} {'MB':>7}  {'signature':<10} state"
    )
    for r in rows:
        acc = lambda v: f"{v:.4f}" if v is not None else "-"  # noqa: E731
        state = ("complete" if r["complete"] else "INCOMPLETE") + (" (latest)" if r["run_id"] == latest else "")
        row = (  # folder names and metrics text are the store's: one line each, through the text gate
            f"{r['run_id']:<34} {r['finished_at'] or '-':<21} {r['preset'] or '-':<10} "
            f"{acc(r['test_accuracy']):>7} {acc(r['onnx_test_accuracy']):>7} {r['bytes'] / 1e6:>7.1f}  {r['signature']:<10} {state}"
        )
        print(shown(row, 1000))
    return 0


def cmd_show(args) -> int:
    store = _store(args.store)
    run = store.resolve(args.run)
    info = summary(store, run)
    metrics = read_metrics(store, run) or {}
    info.update({k: metrics.get(k) for k in ("data", "training", "durations_s", "peak_rss_mb") if k in metrics})
    print(printable(json_text(info, indent=2, sort_keys=True)))
    card = store.read(run, MODEL_CARD)
    if card:
        print(printable(card.decode("utf-8", "replace")))
    return 0


def cmd_download(args) -> int:
    trust = _trust(args)
    store = _store(args.store)
    run = store.resolve(args.run)
    manifest = checked_manifest(store, run, trust)  # read once; signature checked before anything is written
    files = store.download(run, Path(args.dest), manifest)
    print(json_line({"event": "run_downloaded", "run_id": run, "dest": args.dest, "files": files}), flush=True)
    return 0


def cmd_verify(args) -> int:
    trust = _trust(args)
    store = _store(args.store)
    runs = [store.resolve(args.run)] if args.run else store.runs()
    bad = []
    for run in runs:
        try:  # the manifest read once: the signature and the content are checked against the same copy
            manifest = checked_manifest(store, run, trust)
            found = store.problems(run, manifest)
        except DataError as exc:
            found = [str(exc)]
        print(json_line({"run_id": run, "complete": not found, "problems": found}), flush=True)
        if found:
            bad.append(f"run {run} in {store.uri}: {found[0]}")
    if bad:
        raise DataError(bad[0] + (f" (+{len(bad) - 1} more runs)" if len(bad) > 1 else ""))
    return 0


def cmd_export_serving(args) -> int:
    from job.serving import export_serving

    trust = _trust(args)
    print(json_line(export_serving(args.store, args.run, args.dest, args.name, trust)), flush=True)
    return 0


COMMANDS = {
    "list": cmd_list,
    "show": cmd_show,
    "download": cmd_download,
    "verify": cmd_verify,
    "export-serving": cmd_export_serving,
}
