"""The settings as `job train`'s flags (one per setting, grouped as --help shows them) and `job publish`'s few."""

import argparse

from job.config.settings import ENV_PREFIX, TYPES, settable_fields

GROUP_TITLES = {
    "data": "data",
    "train": "model and training",
    "runtime": "runtime",
    "gates": "gates and export",
    "publish": "publishing",
}


def _type(kind: type):
    return kind if kind in (int, float) else str


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
    for f in settable_fields():
        flag = "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        help_text = f"{f.metadata['help']} [{env}; default: {f.default!r}]"
        group = groups[f.metadata["group"]]
        kind = TYPES[f.name]
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


# `job publish`: its flags, and the settings it reads (flags, then JOB_* variables, then defaults)
PUBLISH_FLAGS = ("s3_endpoint", "s3_region", "s3_path_style")
SIGN_FLAGS = ("sign_key", "sign_key_password_env", "sign_certificate", "sign_chain")  # JOB_SIGN_KEY, ...
PUBLISH_FLAGS += SIGN_FLAGS
PUBLISH_SETTINGS = ("out", "run_id", "s3_retries", "s3_timeout", *PUBLISH_FLAGS)


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
    for name in SIGN_FLAGS:
        field = next(f for f in settable_fields() if f.name == name)
        flag, env = "--" + name.replace("_", "-"), ENV_PREFIX + name.upper()
        publish.add_argument(
            flag, dest=name, default=None, metavar=field.metadata["metavar"], help=f"{field.metadata['help']} [{env}]"
        )
