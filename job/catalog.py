"""The run catalog: `python -m job runs {list,show,download,verify} STORE ...`, on local and S3 stores alike.

    list      one row per run: id, training finish time, preset, Keras/ONNX test accuracy, size, complete or not
    show      a run's metrics summary and its model card
    download  every file of a run, each checked against the manifest's sha256 (exit 3 on a mismatch)
    verify    manifest vs stored objects, for one run or all of them; incomplete runs are reported (exit 3)

A run is complete when its manifest exists and lists exactly the files there are. No TensorFlow is imported.
"""

import hashlib
import json
import sys
from pathlib import Path

from job.errors import DataError
from job.storage.manifest import MANIFEST
from job.storage.reader import latest_run, open_reader, read_json


def add_arguments(sub) -> None:
    for name, text in (
        ("list", "list the runs of a store"),
        ("show", "a run's metrics and model card"),
        ("download", "download a run, verifying every sha256"),
        ("verify", "check runs against their manifests"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("store", help="a local folder or s3://bucket/prefix")
        if name in ("show", "download", "verify"):
            p.add_argument("run", nargs="?" if name == "verify" else None, help="run id ('latest' for latest.json's)")
        if name == "download":
            p.add_argument("dest", help="a folder to download into (created; must be empty)")
        if name == "list":
            p.add_argument("--json", action="store_true", help="JSON lines instead of a table")


def _run_id(reader, run: str) -> str:
    if run == "latest":
        run = latest_run(reader) or ""
        if not run:
            raise DataError(f"{reader.uri} has no latest.json")
    if run not in reader.runs():
        raise DataError(f"{reader.uri} holds no run {run!r}; `python -m job runs list {reader.uri}` lists them")
    return run


def problems(reader, run: str) -> list[str]:
    manifest = read_json(reader, run, MANIFEST)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        return ["no manifest: the run is incomplete"]
    stored = {k: v for k, v in reader.files(run).items() if k != MANIFEST}
    listed = {f["path"]: f for f in manifest["files"] if isinstance(f, dict) and "path" in f}
    found = [f"{path}: listed but missing" for path in sorted(set(listed) - set(stored))]
    found += [f"{path}: present but not in the manifest" for path in sorted(set(stored) - set(listed))]
    for path in sorted(set(listed) & set(stored)):
        entry, obj = listed[path], stored[path]
        if obj["bytes"] != entry.get("bytes") or (obj["sha256"] and obj["sha256"] != entry.get("sha256")):
            found.append(f"{path}: size or sha256 differs from the manifest")
    return found


def summary(reader, run: str) -> dict:
    metrics = read_json(reader, run, "metrics.json") or {}
    files = reader.files(run)
    return {
        "run_id": run,
        "finished_at": metrics.get("finished_at"),
        "preset": metrics.get("preset"),
        "test_accuracy": metrics.get("test_accuracy"),
        "onnx_test_accuracy": metrics.get("onnx_test_accuracy"),
        "bytes": sum(f["bytes"] for f in files.values()),
        "complete": not problems(reader, run),
        "location": reader.location(run),
    }


def cmd_list(args) -> int:
    reader = open_reader(args.store)
    latest = latest_run(reader)
    rows = sorted((summary(reader, run) for run in reader.runs()), key=lambda r: r["finished_at"] or "", reverse=True)
    if args.json:
        for row in rows:
            print(json.dumps({**row, "latest": row["run_id"] == latest}, sort_keys=True))
        return 0
    print(f"{'run id':<34} {'finished (UTC)':<21} {'preset':<10} {'keras':>7} {'onnx':>7} {'MB':>7}  state")
    for r in rows:
        acc = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
        state = ("complete" if r["complete"] else "INCOMPLETE") + (" (latest)" if r["run_id"] == latest else "")
        print(
            f"{r['run_id']:<34} {r['finished_at'] or '-':<21} {r['preset'] or '-':<10} "
            f"{acc(r['test_accuracy']):>7} {acc(r['onnx_test_accuracy']):>7} {r['bytes'] / 1e6:>7.1f}  {state}"
        )
    return 0


def cmd_show(args) -> int:
    reader = open_reader(args.store)
    run = _run_id(reader, args.run)
    info = summary(reader, run)
    metrics = read_json(reader, run, "metrics.json") or {}
    info.update({k: metrics.get(k) for k in ("data", "training", "durations_s", "peak_rss_mb") if k in metrics})
    print(json.dumps(info, indent=2, sort_keys=True))
    card = reader.read(run, "MODEL_CARD.md")
    if card:
        print(card.decode())
    return 0


def cmd_download(args) -> int:
    reader = open_reader(args.store)
    run = _run_id(reader, args.run)
    found = problems(reader, run)
    if found:
        raise DataError(f"run {run} is not complete in {reader.uri}: {found[0]}")
    dest = Path(args.dest)
    if dest.exists() and any(dest.iterdir()):
        raise DataError(f"{dest} is not empty; download into a new folder")
    manifest = read_json(reader, run, MANIFEST)
    for entry in manifest["files"] + [{"path": MANIFEST, "sha256": None}]:
        target = dest / entry["path"]
        reader.download(run, entry["path"], target)
        if entry["sha256"] and hashlib.sha256(target.read_bytes()).hexdigest() != entry["sha256"]:
            raise DataError(f"{entry['path']} of run {run} does not match its sha256 after download")
    print(
        json.dumps({"event": "run_downloaded", "run_id": run, "dest": str(dest), "files": len(manifest["files"]) + 1}),
        flush=True,
    )
    return 0


def cmd_verify(args) -> int:
    reader = open_reader(args.store)
    runs = [_run_id(reader, args.run)] if args.run else reader.runs()
    bad = 0
    for run in runs:
        found = problems(reader, run)
        print(json.dumps({"run_id": run, "complete": not found, "problems": found}), flush=True)
        if found:
            print(f"error: data error: run {run} in {reader.uri}: {found[0]}", file=sys.stderr)
            bad += 1
    return DataError.exit_code if bad else 0


COMMANDS = {"list": cmd_list, "show": cmd_show, "download": cmd_download, "verify": cmd_verify}
