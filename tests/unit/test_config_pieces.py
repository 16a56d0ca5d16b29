"""The whole Config stops at the top (cli, pipeline, stages, plan and the config package): every other function
takes the piece it reads (job.config.parts), enforced here on the source like the import-linter contracts. The
pieces cover every setting, follow their settings' groups, and fingerprint checkpoints with the keys that
checkpoints written before the pieces carry."""

import ast
import dataclasses
from pathlib import Path

import pytest

from job.config import Config, parts, resolve, resolve_settings, settable_fields
from job.errors import ConfigError

JOB = Path(__file__).resolve().parents[2] / "job"
WHOLE_CONFIG_ALLOWED = ("cli.py", "cli/", "pipeline.py", "stages.py", "plan.py", "config/")
# Functions allowed to take the whole Config besides the modules above (an entry that no longer does fails below).
KNOWN: set[str] = set()


def _annotation(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return ""


def whole_config_takers(root: Path = JOB) -> set[str]:
    """`module:function` of every function outside the allowed modules with a parameter annotated Config (or
    a config module's Config), or named `cfg` (the name the whole config travels under)."""
    found = set()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(WHOLE_CONFIG_ALLOWED):
            continue
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
            if any(_annotation(a.annotation) == "Config" or a.arg == "cfg" for a in args):
                owner = parents.get(fn)
                name = f"{owner.name}.{fn.name}" if isinstance(owner, ast.ClassDef) else fn.name
                found.add(f"{rel}:{name}")
    return found


def test_no_function_below_the_pipeline_takes_the_whole_config():
    takers = whole_config_takers()
    new = sorted(takers - KNOWN)
    assert not new, f"these take the whole Config; give them the piece they read (job.config.parts): {new}"
    converted = sorted(KNOWN - takers)
    assert not converted, f"converted to pieces (good): remove them from KNOWN in this test: {converted}"


def test_the_check_finds_a_whole_config_parameter(tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "card.py").write_text(
        "from job.config import Config\n"
        "def render(run: Config): ...\n"
        "class Tracker:\n    def __init__(self, cfg, uri: str): ...\n"
        "def fine(record: 'RunRecord', gates): ...\n"
    )
    (tmp_path / "pipeline.py").write_text("def run(cfg: Config): ...\n")
    assert whole_config_takers(tmp_path) == {"report/card.py:render", "report/card.py:Tracker.__init__"}


def _read_by(piece: type) -> set[str]:
    """The settings a piece reads, nested pieces and the derived S3 options included."""
    names = set()
    for f in dataclasses.fields(piece):
        kind = f.type
        if "derive" in f.metadata:
            names |= _read_by(parts.S3Options) if f.name == "s3" else set()
        elif isinstance(kind, type) and issubclass(kind, parts.Piece):
            names |= _read_by(kind)
        else:
            names.add(f.metadata.get("setting", f.name))
    return names


GROUP_PIECES = {
    "data": (parts.DataConfig,),
    "gates": (parts.GateConfig,),
    "publish": (parts.PublishConfig, parts.RunRecord),  # the run id and layout are also the record's
    "runtime": (parts.RuntimeConfig,),
    "train": (parts.TrainConfig, parts.RunRecord),
}


def test_every_setting_is_read_by_a_piece_of_its_group():
    for f in settable_fields():
        group = f.metadata["group"]
        pieces = GROUP_PIECES[group]
        assert any(f.name in _read_by(p) for p in pieces), (
            f"setting {f.name} (group {group}) is read by no piece: add it to one of "
            f"{', '.join(p.__name__ for p in pieces)} in job/config/parts.py"
        )
        assert f.name in Config.__dataclass_fields__  # a piece reads settings, it declares none


def test_each_piece_holds_the_current_values_of_its_settings():
    cfg = resolve({"preset": "fast", "run_id": "r1", "out": "s3://bucket/runs", "s3_retries": 3}, env={})
    assert cfg.dataset.source == cfg.data and cfg.arch.name == cfg.model == "fast_net"
    assert cfg.optim.epochs == cfg.epochs and cfg.inputs.crop_padding == cfg.crop_padding
    assert cfg.training.optim == cfg.optim and cfg.training.model == cfg.arch
    assert cfg.publishing.s3 == parts.S3Options(retries=3) and cfg.publishing.run_id == "r1"
    assert cfg.record.params == {k: v for k, v in cfg.to_dict().items() if k != "sources"}
    assert cfg.record.config_json() == cfg.to_json()
    cfg.run_id = "r2"  # resolve() itself sets fields after construction: a piece is read at each access
    assert cfg.publishing.run_id == cfg.training.run_id == "r2"
    local = resolve({"run_id": "r1"}, env={})
    assert local.publishing.s3 is None  # nothing on S3: boto3 never loads


# The keys checkpoints were fingerprinted with before the pieces (job.train.checkpoint.FINGERPRINT_KEYS, kept by
# hand until issue 32): a checkpoint written then must still resume.
OLD_FINGERPRINT_KEYS = (
    "model",
    "width",
    "activation",
    "bn_momentum",
    "drop_last",
    "epochs",
    "batch_size",
    "optimizer",
    "learning_rate",
    "momentum",
    "weight_decay",
    "bias_lr_scale",
    "lookahead_every",
    "stem_bias_epochs",
    "label_smoothing",
    "augment",
    "crop_padding",
    "seed",
    "limit",
    "val_fraction",
    "test_fraction",
)


@pytest.mark.parametrize("preset", ["seed", "fast", "fast-long"])
def test_the_weights_fingerprint_is_the_one_old_checkpoints_carry(preset):
    cfg = resolve({"preset": preset, "limit": 500, "precision": "float32"}, env={})
    assert cfg.training.fingerprint() == {k: getattr(cfg, k) for k in OLD_FINGERPRINT_KEYS}


def test_what_does_not_change_the_weights_is_not_fingerprinted():
    a = resolve({"run_id": "a", "data": "/mnt/one/data.tar", "cache_dir": "/c1", "log_dir": "/l"}, env={})
    b = resolve({"run_id": "b", "data": "/mnt/two/data.tar", "precision": "mixed_bfloat16", "tta_level": 2}, env={})
    assert a.training.fingerprint() == b.training.fingerprint()
    assert resolve({"batch_size": 8}, env={}).training.fingerprint() != a.training.fingerprint()


def test_a_setting_added_later_keeps_old_checkpoints_at_its_old_value(monkeypatch):
    cfg = resolve({"preset": "fast"}, env={})
    assert cfg.optim.lookahead_bn_stats is True and "lookahead_bn_stats" not in cfg.training.fingerprint()
    cfg.lookahead_bn_stats = False  # not what older checkpoints were trained with: a different configuration
    assert cfg.training.fingerprint()["lookahead_bn_stats"] is False
    monkeypatch.setitem(parts.LATER_SETTINGS, "augment", False)  # as if `augment` were new, off before
    cfg.augment = False
    assert "augment" not in cfg.training.fingerprint()
    cfg.augment = True
    assert cfg.training.fingerprint()["augment"] is True


def test_resolve_settings_reads_only_its_settings_from_the_same_layers():
    env = {"JOB_S3_RETRIES": "7", "JOB_EPOCHS": "3"}
    names = ("out", "s3_endpoint", "s3_region", "s3_path_style", "s3_retries", "s3_timeout")
    got = resolve_settings(names, {"out": "s3://b/p", "s3_endpoint": "http://h"}, env)
    assert (got.out, got.s3_retries, got.s3_endpoint) == ("s3://b/p", 7, "http://h")
    assert got.sources["s3_retries"] == "env JOB_S3_RETRIES" and not hasattr(got, "epochs")
    assert parts.S3Options.of(got) == parts.S3Options(endpoint="http://h", retries=7)


@pytest.mark.parametrize(
    "cli, env, fragment",
    [
        ({"out": "s3://b/p", "run_id": "r"}, {"JOB_S3_RETRIES": "0"}, "s3_retries = 0"),
        ({"out": "gs://b/p", "run_id": "r"}, {}, "unsupported URI scheme"),
        ({"out": "x", "run_id": "../x"}, {}, "run_id"),
        ({"out": "x", "run_id": "r"}, {"JOB_EPOCHZ": "3"}, "JOB_EPOCHZ is not a known setting"),
        # parsed as in `job train`, though unused
        ({"out": "x", "run_id": "r"}, {"JOB_EPOCHS": "three"}, "env JOB_EPOCHS"),
    ],
)
def test_resolve_settings_checks_as_resolve_does(cli, env, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        resolve_settings(("out", "run_id", "s3_retries"), cli, env)
