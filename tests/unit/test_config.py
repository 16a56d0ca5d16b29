"""The config object: layers, parsing, validation, and the CLI around it (no TensorFlow involved)."""

import json

import pytest

from job import config
from job.errors import ConfigError


def test_defaults_are_the_seed_recipe():
    cfg = config.resolve({}, env={})
    assert (cfg.preset, cfg.model, cfg.epochs, cfg.batch_size, cfg.optimizer, cfg.learning_rate) == (
        "seed",
        "seed_cnn",
        10,
        64,
        "adam",
        1e-3,
    )
    assert not cfg.augment and cfg.label_smoothing == 0
    assert cfg.sources["epochs"] == "default"


def test_layers_override_in_order():
    cfg = config.resolve(
        {"epochs": 3},
        env={"JOB_EPOCHS": "5", "JOB_BATCH_SIZE": "32"},
        hyperparameters={"batch-size": "16", "seed": "7"},
        platform_defaults={"out": "/m"},
    )
    assert cfg.epochs == 3 and cfg.sources["epochs"] == "--epochs"
    assert cfg.batch_size == 32 and cfg.sources["batch_size"] == "env JOB_BATCH_SIZE"
    assert cfg.seed == 7 and cfg.sources["seed"] == "hyperparameter seed"
    assert cfg.out == "/m" and cfg.sources["out"] == "platform"


def test_preset_applies_below_every_explicit_layer():
    cfg = config.resolve({}, env={"JOB_PRESET": "fast", "JOB_EPOCHS": "2"})
    assert cfg.model == "fast_net" and cfg.augment and cfg.sources["model"] == "preset fast"
    assert cfg.epochs == 2


def test_fast_presets_share_one_recipe_and_differ_in_size_and_length():
    recipe = ("model", "optimizer", "momentum", "bias_lr_scale", "label_smoothing", "augment", "tta_level", "precision")
    presets = {name: config.resolve({"preset": name}, env={}) for name in ("fast", "fast-long", "fast-short")}
    assert len({tuple(getattr(c, k) for k in recipe) for c in presets.values()}) == 1
    assert presets["fast"].crop_padding == presets["fast-long"].crop_padding == 2
    assert presets["fast-short"].crop_padding == 0  # flips only: one epoch is too short for crops
    assert presets["fast-short"].epochs < presets["fast"].epochs < presets["fast-long"].epochs
    assert presets["fast-short"].width < presets["fast"].width


def test_auto_precision_is_bf16_only_with_bf16_units_and_is_resolved_with_its_reason(tmp_path, monkeypatch):
    from job.runtime import resources

    assert resources.auto_precision({"avx512f", "amx_bf16", "amx_tile"}) == (
        "mixed_bfloat16",
        "this CPU has AMX bf16 tiles",
    )
    assert resources.auto_precision({"avx512f", "avx512_bf16"}) == ("mixed_bfloat16", "this CPU has AVX512_BF16")
    assert resources.auto_precision({"avx2", "fma"})[0] == "float32"
    assert resources.auto_precision({"avx512f", "avx512_vnni"})[0] == "float32"  # AVX-512 alone has no bf16 math
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu avx2 fma\n")
    assert resources.cpu_flags(cpuinfo) == {"fpu", "avx2", "fma"}
    assert resources.cpu_flags(tmp_path / "missing") == set()

    for flags, expected in (({"avx2"}, "float32"), ({"amx_bf16"}, "mixed_bfloat16")):
        monkeypatch.setattr(resources, "cpu_flags", lambda flags=flags: flags)
        cfg = config.resolve({"preset": "fast"}, env={})
        assert cfg.precision == expected
        assert cfg.sources["precision"].startswith("preset fast (auto: ")
        assert json.loads(cfg.to_json())["precision"] == expected  # config.json records what ran
    explicit = config.resolve({"preset": "fast", "precision": "float32"}, env={})
    assert (explicit.precision, explicit.sources["precision"]) == ("float32", "--precision")
    assert config.resolve({}, env={}).precision == "float32"  # the seed recipe stays float32 everywhere


@pytest.mark.parametrize(
    "env,fragment",
    [
        ({"JOB_EPOCHS": "ten"}, "JOB_EPOCHS"),
        ({"JOB_EPOCHS": "0"}, "epochs"),
        ({"JOB_AUGMENT": "maybe"}, "JOB_AUGMENT"),
        ({"JOB_EPOCS": "3"}, "JOB_EPOCS"),
        ({"JOB_PRESET": "turbo"}, "preset"),
        ({"JOB_RUN_ID": "../etc"}, "run_id"),
        ({"JOB_MIN_ACCURACY": "65"}, "min_accuracy"),
        ({"JOB_TEST_FRACTION": "0.9"}, "test_fraction"),
        ({"JOB_MOMENTUM": "1.0"}, "momentum"),
        ({"JOB_CROP_PADDING": "40"}, "crop_padding"),
        ({"JOB_BIAS_LR_SCALE": "0"}, "bias_lr_scale"),
    ],
)
def test_bad_values_name_their_source(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config.resolve({}, env=env)


def test_sagemaker_hyperparameters_are_json_strings():
    cfg = config.resolve({}, env={}, hyperparameters={"epochs": '"4"', "augment": "true", "learning-rate": "0.01"})
    assert (cfg.epochs, cfg.augment, cfg.learning_rate) == (4, True, 0.01)
    with pytest.raises(ConfigError, match="hyperparameter"):
        config.resolve({}, env={}, hyperparameters={"epochz": "1"})


def test_generated_run_id_is_valid_and_unique():
    a, b = config.resolve({}, env={}), config.resolve({}, env={})
    assert config.RUN_ID_PATTERN.match(a.run_id) and a.run_id != b.run_id and "seed" in a.run_id
