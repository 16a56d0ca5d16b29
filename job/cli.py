"""Command line: `python -m job train [options]` and `python -m job publish RUN_DIR STORE`.

Kept free of TensorFlow imports: `--help`, config errors and fail-fast storage checks answer at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

from job import config as config_lib
from job.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED, JobError, Terminated

EXIT_CODES_HELP = """exit codes:
  0    success: the run was published
  1    unexpected internal error (a bug: please report the traceback)
  2    usage or configuration error (flag, JOB_* variable, hyperparameter)
  3    data error: missing, unreadable, malformed or unsafe data source
  4    storage error: the store cannot be written or read (checked before training)
  5    verification failed: exported model does not match Keras (parity gate)
  6    quality gate failed: test accuracy below --min-accuracy
  7    checkpoint error: corrupt or mismatched checkpoint
  130  interrupted (Ctrl-C)
  143  preempted (SIGTERM): in training, checkpoint saved (run again with the same --run-id to resume);
       elsewhere, nothing published
"""

GROUP_TITLES = {"data": "data", "train": "model and training", "runtime": "runtime", "gates": "gates and export",
                "publish": "publishing"}


def _type(kind: str):
    return {"int": int, "float": float}.get(kind, str)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m job", description="Train, evaluate, export (SavedModel + ONNX), verify and publish a "
        "CIFAR-10 CNN.", epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,publish}")

    train = sub.add_parser("train", help="run the whole job", epilog=EXIT_CODES_HELP,
                           description="Run data -> train -> evaluate -> export -> verify -> publish. Every "
                           "option can also be set as an environment variable JOB_<NAME> (e.g. JOB_EPOCHS=3); "
                           "flags win over the environment, which wins over the preset.",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {key: train.add_argument_group(title) for key, title in GROUP_TITLES.items()}
    for f in config_lib.settable_fields():
        flag = "--" + f.name.replace("_", "-")
        env = config_lib.ENV_PREFIX + f.name.upper()
        help_text = f"{f.metadata['help']} [{env}; default: {f.default!r}]"
        group = groups[f.metadata["group"]]
        if f.type == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=_type(f.type), default=None, choices=f.metadata["choices"],
                               metavar=f.metadata["metavar"] or f.name.upper(), help=help_text)
    train.add_argument("--print-config", action="store_true", help="resolve and print the config, then exit")

    publish = sub.add_parser("publish", help="publish an existing local run folder to a store",
                             description="Verify a finished run folder against its manifest and publish it "
                             "(e.g. after a failed upload), without training again.", epilog=EXIT_CODES_HELP,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    publish.add_argument("run_dir", help="a run folder holding manifest.json")
    publish.add_argument("store", help="destination: a local folder or s3://bucket/prefix")
    for name in ("s3_endpoint", "s3_region"):
        publish.add_argument("--" + name.replace("_", "-"), dest=name, default=None)
    publish.add_argument("--s3-path-style", dest="s3_path_style", action=argparse.BooleanOptionalAction, default=None)
    return parser


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # silence TensorFlow's C++ banner
    for noisy in ("tensorflow", "absl", "tf2onnx", "botocore", "boto3", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def resolve_config(args: argparse.Namespace, platform):
    cli_values = {f.name: getattr(args, f.name, None) for f in config_lib.settable_fields()}
    return config_lib.resolve(cli_values, os.environ, platform.hyperparameters, platform.defaults)


def cmd_train(args, platform) -> int:
    from job import pipeline

    cfg = resolve_config(args, platform)
    if args.print_config:
        print(cfg.to_json(), end="")
        return 0
    log = logging.getLogger("job")
    log.info("run %s on %s, config: %s", cfg.run_id, platform.name,
             json.dumps({k: v for k, v in cfg.to_dict().items() if k != "sources"}, sort_keys=True))
    summary = pipeline.run(cfg, platform)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0


def cmd_publish(args, platform) -> int:
    from pathlib import Path

    from job.errors import DataError
    from job.manifest import verify_manifest
    from job.store import open_store

    cli_values = {"out": args.store, "s3_endpoint": args.s3_endpoint, "s3_region": args.s3_region,
                  "s3_path_style": args.s3_path_style}
    run_dir = Path(args.run_dir)
    manifest_file = run_dir / "manifest.json"
    if not manifest_file.is_file():
        raise DataError(f"{run_dir}: no manifest.json; only a finished run folder can be published")
    run_id = json.loads(manifest_file.read_text()).get("run_id") or run_dir.name
    cli_values["run_id"] = run_id
    cfg = config_lib.resolve(cli_values, os.environ)
    problems = verify_manifest(run_dir)
    if problems:
        raise DataError(f"{run_dir} does not match its manifest: {problems[0]}"
                        + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    store = open_store(cfg)
    store.probe()
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    summary = {"event": "run_published", "run_id": run_id, "store": store.uri,
               "test_accuracy": metrics.get("test_accuracy"), "onnx_test_accuracy": metrics.get("onnx_test_accuracy")}
    summary["uri"] = store.publish(run_dir, run_id, summary)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    from job import platform as platform_lib

    platform = None

    def terminate(signum, frame):  # the training loop installs its own, checkpointing handler
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)
    try:
        platform = platform_lib.detect()
        return {"train": cmd_train, "publish": cmd_publish}[args.command](args, platform)
    except JobError as exc:
        message = f"{exc.kind} error: {exc}"
        print(f"error: {message}", file=sys.stderr, flush=True)
        if platform is not None:
            platform_lib.write_failure(platform, message)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; nothing was published", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("terminated: SIGTERM outside training; nothing was published", file=sys.stderr)
        return EXIT_PREEMPTED
    except Exception as exc:
        from job.train import Preempted  # only reachable once TensorFlow was imported
        if isinstance(exc, Preempted):
            print(f"preempted: {exc}", file=sys.stderr, flush=True)
            return EXIT_PREEMPTED
        raise
