"""Command line: `python -m job {train,publish,predict,runs,serve}`.

Kept free of TensorFlow imports: `--help`, config errors, fail-fast storage checks and the ONNX-only
predictor answer at once. Every failure ends in one line `error: <kind> error: ...` and its exit code
(job.errors); SIGTERM and SIGINT end in 143 and 130 at any stage, with nothing published.
"""

import argparse
import json
import logging
import os
import signal
import sys

from job import __version__
from job import config as config_lib
from job.errors import (
    EXIT_INTERRUPTED,
    EXIT_PREEMPTED,
    ConfigError,
    JobError,
    Preempted,
    Terminated,
    exit_codes_help,
)
from job.gates.json_doc import load_json
from job.gates.text import shown
from job.runtime.events import claim_stdout, emit
from job.runtime.logs import setup_logging
from job.runtime.redact import redact, redact_value
from job.runtime.telemetry import revision

GROUP_TITLES = {
    "data": "data",
    "train": "model and training",
    "runtime": "runtime",
    "gates": "gates and export",
    "publish": "publishing",
}


ERROR_LINE_LIMIT = 2000  # characters of a failure message shown; a longer one ends in `...`


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in the job's one-line form (exit 2) instead of usage text."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}; see '{self.prog} --help'")


def _type(kind: type):
    return kind if kind in (int, float) else str


def build_parser() -> argparse.ArgumentParser:
    epilog = exit_codes_help()
    raw = argparse.RawDescriptionHelpFormatter
    parser = Parser(
        prog="python -m job",
        description="Train, evaluate, export (SavedModel + ONNX), verify and "
        "publish a CIFAR-10 CNN; predict with the ONNX model.",
        epilog=epilog,
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=f"cifar10-job {__version__} (revision {revision()})")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{train,publish,predict,runs,serve}", parser_class=Parser
    )

    add_train_parser(sub, epilog)
    add_publish_parser(sub, epilog)

    from job import catalog, predict

    runs = sub.add_parser(
        "runs",
        help="list, show, download or verify the runs of a store",
        epilog=epilog,
        formatter_class=raw,
        description=catalog.__doc__.split("\n\n")[1],
    )
    catalog.add_arguments(
        runs.add_subparsers(
            dest="runs_command",
            required=True,
            metavar="{list,show,download,verify,export-serving}",
            parser_class=Parser,
        )
    )
    predict.add_arguments(
        sub.add_parser(
            "predict",
            help="classify images with a model.onnx (no TensorFlow)",
            description=predict.__doc__.split("\n\n")[1],
            epilog=epilog,
            formatter_class=raw,
        )
    )
    import job.serve
    from job.serve import settings as serve_settings  # the flags only: the server's libraries load on `serve`

    serve_settings.add_arguments(
        sub.add_parser(
            "serve",
            help="serve a model.onnx over HTTP: v2 (KServe, Triton), SageMaker, Vertex AI (no TensorFlow)",
            description=job.serve.__doc__.split("\n\n")[0],
            epilog=epilog,
            formatter_class=raw,
        )
    )
    return parser


def add_train_parser(sub, epilog: str) -> None:
    """`job train`: every settable config field as a flag, grouped as --help shows them."""
    raw = argparse.RawDescriptionHelpFormatter
    train = sub.add_parser(
        "train",
        help="run the whole job",
        epilog=epilog,
        formatter_class=raw,
        description="Run data -> train -> evaluate -> export -> verify -> publish. Every "
        "option can also be set as an environment variable JOB_<NAME> (e.g. JOB_EPOCHS=3); "
        "flags win over the environment, which wins over the preset.",
    )
    groups = {key: train.add_argument_group(title) for key, title in GROUP_TITLES.items()}
    for f in config_lib.settable_fields():
        flag = "--" + f.name.replace("_", "-")
        env = config_lib.ENV_PREFIX + f.name.upper()
        help_text = f"{f.metadata['help']} [{env}; default: {f.default!r}]"
        group = groups[f.metadata["group"]]
        kind = config_lib.TYPES[f.name]
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(
                flag,
                dest=f.name,
                type=_type(kind),
                default=None,
                choices=f.metadata["choices"],
                metavar=f.metadata["metavar"] or f.name.upper(),
                help=help_text,
            )
    train.add_argument("--print-config", action="store_true", help="resolve and print the config, then exit")
    train.add_argument(
        "--config",
        dest="config_file",
        metavar="FILE",
        help="settings from a JSON file, e.g. a run's own config.json to re-run it (its run id is "
        "not reused); flags and JOB_* variables still override",
    )
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="resolve the config, probe the store, checkpoint location, tracking server, TensorBoard folder and "
        "CI report files, read the --baseline and the data source's headers and print the plan; train nothing",
    )


def add_publish_parser(sub, epilog: str) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    publish = sub.add_parser(
        "publish",
        help="publish an existing local run folder to a store",
        epilog=epilog,
        formatter_class=raw,
        description="Verify a finished run folder against its manifest "
        "and publish it (e.g. after a failed upload), without training again.",
    )
    publish.add_argument("run_dir", help="a run folder holding manifest.json")
    publish.add_argument("store", help="destination: a local folder or s3://bucket/prefix")
    for name in ("s3_endpoint", "s3_region"):
        publish.add_argument("--" + name.replace("_", "-"), dest=name, default=None)
    publish.add_argument("--s3-path-style", dest="s3_path_style", action=argparse.BooleanOptionalAction, default=None)
    for name in ("sign_key", "sign_key_password_env", "sign_certificate", "sign_chain"):  # JOB_SIGN_KEY, ...
        field = next(f for f in config_lib.settable_fields() if f.name == name)
        flag, env = "--" + name.replace("_", "-"), config_lib.ENV_PREFIX + name.upper()
        publish.add_argument(
            flag, dest=name, default=None, metavar=field.metadata["metavar"], help=f"{field.metadata['help']} [{env}]"
        )


def cmd_train(args, platform) -> int:
    cli_values = {f.name: getattr(args, f.name, None) for f in config_lib.settable_fields()}
    cfg = config_lib.resolve(cli_values, os.environ, platform.hyperparameters, platform.defaults, args.config_file)
    if args.print_config:
        print(cfg.to_json(), end="")
        return 0
    if args.dry_run:
        from job.plan import plan

        claim_stdout()
        emit("plan", **plan(cfg, platform))
        return 0
    from job import pipeline

    claim_stdout()
    RUN["run_id"] = cfg.run_id
    logging.getLogger("job").info(
        "run %s on %s, config: %s",
        cfg.run_id,
        platform.name,
        json.dumps({k: v for k, v in cfg.to_dict().items() if k != "sources"}, sort_keys=True),
    )
    emit(
        "run_started",
        run_id=cfg.run_id,
        preset=cfg.preset,
        platform=platform.name,
        store=cfg.out,
        layout=cfg.layout,
        attempt=platform.attempt,
        version=__version__,
    )
    summary = pipeline.run(cfg, platform)
    emit(summary.pop("event", "run_complete"), **summary)
    if summary.get("uri"):  # the chief published: reports where CI reviewers look
        from job.report.ci import report_success

        report_success(redact_value(summary))
    return 0


def cmd_publish(args, platform) -> int:
    """A finished run folder (kept after a failed upload, or copied) through `job train`'s own publish path."""
    from pathlib import Path

    from job.pipeline import publish, summary_of
    from job.storage import open_store, s3_options_from
    from job.storage.local import LocalLocation
    from job.storage.manifest import MANIFEST, parse_manifest

    run_dir = Path(args.run_dir)
    folder = LocalLocation(str(run_dir), what="run folder")
    manifest = parse_manifest(folder.read(MANIFEST), str(run_dir))
    run_id = manifest["run_id"] if isinstance(manifest["run_id"], str) else run_dir.name
    options = {"out": args.store, "run_id": run_id}
    options.update({k: getattr(args, k) for k in ("s3_endpoint", "s3_region", "s3_path_style")})
    options.update(
        {k: getattr(args, k) for k in ("sign_key", "sign_key_password_env", "sign_certificate", "sign_chain")}
    )
    cfg = config_lib.resolve(options, os.environ)
    from job.storage.signing import signed_copy, signer_of

    signer = signer_of(cfg)  # a key that does not load: exit 2, before the store is touched
    if not cfg.out.startswith("s3://") and run_dir.resolve().parent == Path(cfg.out).expanduser().resolve():
        raise ConfigError(
            f"{run_dir} is already in the store {cfg.out}; publish it to another store, or copy it out first"
        )
    claim_stdout()
    RUN["run_id"] = run_id
    store = open_store(cfg.out, s3_options_from(cfg))
    try:
        metrics = load_json(folder.read("metrics.json") or b"{}", f"{run_dir}/metrics.json", allow_nan=True)
    except (OSError, JobError):  # the manifest decides what is published; the summary is best effort
        metrics = {}
    summary = summary_of(metrics if isinstance(metrics, dict) else {}, run_id, store.uri)
    if signer is None:
        emit("run_published", **publish(run_dir, run_id, store, summary))
        return 0
    import tempfile

    with tempfile.TemporaryDirectory(prefix="publish-signed-") as tmp:  # the given folder is never changed
        signed = signed_copy(run_dir, run_id, signer, Path(tmp))
        emit("run_published", **publish(signed, run_id, store, summary), signed_by=signer.fingerprint)
    return 0


def cmd_runs(args, platform) -> int:
    from job import catalog

    return catalog.COMMANDS[args.runs_command](args)


def cmd_predict(args, platform) -> int:
    from job import predict

    return predict.run(args)


def cmd_serve(args, platform) -> int:
    from job.serve import main as serve

    return serve.run(args)


def _terminate(signum, frame):  # the training loop installs its own, checkpointing handler
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    from job.runtime import platform as platform_lib
    from job.runtime.signals import redeliver_swallowed_signals

    redeliver_swallowed_signals()

    command = None
    RUN.clear()
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        setup_logging()
        platform = platform_lib.detect() if command in ("train", "publish") else platform_lib.Platform()
        commands = {
            "train": cmd_train,
            "publish": cmd_publish,
            "predict": cmd_predict,
            "runs": cmd_runs,
            "serve": cmd_serve,
        }
        return commands[command](args, platform)
    except JobError as exc:
        # The one `error:` line: redacted, then through the text gate (a name with a line break, an escape
        # sequence or a workflow command read from a store or an archive is shown escaped, on this one line).
        message = shown(redact(f"{exc.kind} error: {exc}"), ERROR_LINE_LIMIT)
        print(f"error: {message}", file=sys.stderr, flush=True)
        if command == "train":
            platform_lib.write_failure(platform_lib.failure_file(), message)
            from job.report.ci import report_failure

            report_failure(exc.kind, redact(str(exc)))
        return _failed(command, exc.exit_code, exc.kind, redact(str(exc)))
    except KeyboardInterrupt:
        print("error: interrupted; nothing was published", file=sys.stderr, flush=True)
        return _failed(command, EXIT_INTERRUPTED, "interrupted", "SIGINT; nothing was published")
    except Preempted as exc:
        print(shown(redact(f"preempted: {exc}"), ERROR_LINE_LIMIT), file=sys.stderr, flush=True)
        return _failed(command, EXIT_PREEMPTED, "preempted", redact(str(exc)))
    except Terminated:
        print("terminated: SIGTERM; nothing was published", file=sys.stderr, flush=True)
        return _failed(command, EXIT_PREEMPTED, "terminated", "SIGTERM; nothing was published")


RUN: dict = {}  # what the failure event can say about the run (its id, once known)


def _failed(command: str | None, code: int, kind: str, reason: str) -> int:
    """The `run_failed` event for train/publish (the predictor's stdout is its results), then the code."""
    if command in ("train", "publish"):
        emit("run_failed", exit_code=code, kind=kind, reason=reason, **RUN)
    return code
