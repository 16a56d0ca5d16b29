"""Command line: `python -m job {train,publish,predict,runs,serve}`.

Kept free of TensorFlow imports: `--help`, config errors, fail-fast storage checks and the ONNX-only
predictor answer at once. Every failure ends in one line `error: <kind> error: ...` and its exit code
(job.errors); SIGTERM and SIGINT end in 143 and 130 at any stage, with nothing published.
"""

import argparse
import json
import logging
import os
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
from job.gates.text import shown
from job.runtime.events import claim_stdout, emit
from job.runtime.logs import setup_logging
from job.runtime.redact import redact, redact_value
from job.runtime.telemetry import revision

ERROR_LINE_LIMIT = 2000  # characters of a failure message shown; a longer one ends in `...`


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in the job's one-line form (exit 2) instead of usage text."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}; see '{self.prog} --help'")


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

    config_lib.add_train_parser(sub, epilog)
    config_lib.add_publish_parser(sub, epilog)
    add_consumer_parsers(sub, epilog)
    return parser


def add_consumer_parsers(sub, epilog: str) -> None:
    """`runs`, `predict` and `serve`: the commands that read a store or a model (no TensorFlow)."""
    from job import catalog, predict

    raw = argparse.RawDescriptionHelpFormatter
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

    from job.pipeline import republish
    from job.storage.layout import MANIFEST
    from job.storage.manifest import parse_manifest
    from job.storage.runs import run_folder

    run_dir = Path(args.run_dir)
    manifest = parse_manifest(run_folder(run_dir).read("", MANIFEST), str(run_dir))  # read with a store's checks
    run_id = manifest["run_id"] if isinstance(manifest["run_id"], str) else run_dir.name
    flags = {name: getattr(args, name) for name in config_lib.PUBLISH_FLAGS}
    settings = config_lib.resolve_settings(config_lib.PUBLISH_SETTINGS, {**flags, "out": args.store, "run_id": run_id})

    def started() -> None:
        claim_stdout()
        RUN["run_id"] = run_id

    emit("run_published", **republish(run_dir, settings, started))
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


def main(argv: list[str] | None = None) -> int:
    from job.runtime import platform as platform_lib
    from job.runtime.signals import end_of_process

    try:
        return _main(argv, platform_lib)
    finally:
        end_of_process()  # after a publish committed, nothing that arrives can kill the process as it ends


def _main(argv: list[str] | None, platform_lib) -> int:
    from job.runtime.signals import committed, install_handlers, signal_over_errors

    command = None
    RUN.clear()
    try:
        # inside the `try`: a signal handled the moment the handlers are in place is a Terminated like any other
        install_handlers()  # SIGTERM -> Terminated, SIGINT -> KeyboardInterrupt, never dropped (job.runtime.signals)
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
        with signal_over_errors():
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
    except (KeyboardInterrupt, Terminated) as exc:
        if committed():  # a signal raised on the way out of a completed publish: the run IS published (exit 0)
            print(
                f"warning: {_signal_name(exc)} arrived after the run was published; it stays published", file=sys.stderr
            )
            return 0
        if isinstance(exc, Terminated):
            print("terminated: SIGTERM; nothing was published", file=sys.stderr, flush=True)
            return _failed(command, EXIT_PREEMPTED, "terminated", "SIGTERM; nothing was published")
        print("error: interrupted; nothing was published", file=sys.stderr, flush=True)
        return _failed(command, EXIT_INTERRUPTED, "interrupted", "SIGINT; nothing was published")
    except Preempted as exc:
        print(shown(redact(f"preempted: {exc}"), ERROR_LINE_LIMIT), file=sys.stderr, flush=True)
        return _failed(command, EXIT_PREEMPTED, "preempted", redact(str(exc)))


RUN: dict = {}  # what the failure event can say about the run (its id, once known)


def _signal_name(exc: BaseException) -> str:
    return "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"


def _failed(command: str | None, code: int, kind: str, reason: str) -> int:
    """The `run_failed` event for train/publish (the predictor's stdout is its results), then the code."""
    if command in ("train", "publish"):
        emit("run_failed", exit_code=code, kind=kind, reason=reason, **RUN)
    return code
