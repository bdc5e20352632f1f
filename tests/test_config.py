"""Config: defaults -> YAML file -> dotted overrides, type-checked, with clear errors."""

import pytest

from grace.config.schema import TrainConfig, load_config
from grace.errors import GraceInputError
from grace.models.prompt import SYSTEM_PROMPT


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults():
    cfg = load_config()
    assert cfg == TrainConfig()
    assert (cfg.method, cfg.mode, cfg.reward.variant) == ("grace", "unsupervised", "reference")
    assert cfg.rollout.num_rollouts == 8 and cfg.rollout.temperature == 1.0
    assert cfg.rollout.context_temperature == 0.5
    assert cfg.reward.scale == 10.0 and cfg.reward.truncation_penalty == -1.0
    assert cfg.optim.learning_rate == 1e-6 and cfg.optim.dual_clip == 3.0
    assert cfg.data.max_prompt_tokens == 1024 and cfg.data.system_prompt == SYSTEM_PROMPT


def test_file_then_overrides_precedence(tmp_path):
    path = write(
        tmp_path,
        "mode: supervised\n"
        "rollout:\n  max_new_tokens: 32\n  temperature: 0.7\n"
        "optim:\n  learning_rate: 1e-5\n",  # YAML 1.1 reads 1e-5 as a string: coerced
    )
    cfg = load_config(str(path), {"rollout.max_new_tokens": "16", "seed": "3"})
    assert cfg.mode == "supervised"  # file over default
    assert cfg.rollout.temperature == 0.7  # file, not overridden
    assert cfg.rollout.max_new_tokens == 16 and isinstance(cfg.rollout.max_new_tokens, int)
    assert cfg.seed == 3  # override
    assert cfg.optim.learning_rate == 1e-5 and isinstance(cfg.optim.learning_rate, float)
    assert cfg.rollout.top_p == 1.0 and cfg.reward.variant == "reference"  # defaults kept


def test_saved_config_loads_back_equal(tmp_path):
    cfg = load_config(overrides={"mode": "supervised", "optim.dual_clip": None, "model.lora": True})
    cfg.save(tmp_path / "config.yaml")
    assert load_config(str(tmp_path / "config.yaml")) == cfg


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("rollout.max_new_tokens", "abc", "rollout.max_new_tokens: expected int, got 'abc'"),
        ("rollout.max_new_tokens", 2.5, "rollout.max_new_tokens: expected int, got 2.5"),
        ("batch_size", True, "batch_size: expected int, got True"),
        ("optim.learning_rate", "fast", "optim.learning_rate: expected float, got 'fast'"),
        ("model.lora", "maybe", "model.lora: expected true/false, got 'maybe'"),
        ("model.name", None, "model.name: expected a string, got None"),
    ],
)
def test_type_errors_name_the_key_and_value(key, value, expected):
    with pytest.raises(GraceInputError) as err:
        load_config(overrides={key: value})
    assert str(err.value) == f"overrides: {expected}"


def test_type_error_in_a_file_names_the_file(tmp_path):
    path = write(tmp_path, "rollout:\n  num_rollouts: many\n")
    with pytest.raises(GraceInputError, match=r"run\.yaml: rollout\.num_rollouts: expected int"):
        load_config(str(path))


def test_unknown_keys_are_named(tmp_path):
    with pytest.raises(GraceInputError, match=r"unknown key 'rollout\.max_new_tok'.*max_new_tokens"):
        load_config(overrides={"rollout.max_new_tok": "3"})
    with pytest.raises(GraceInputError, match=r"run\.yaml: unknown key 'bogus'"):
        load_config(str(write(tmp_path, "bogus: 1\n")))
    with pytest.raises(GraceInputError, match=r"'rollout' must be a mapping"):
        load_config(overrides={"rollout": "3"})


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "mode: supervised\nseed: 3\n  oops: 1\n", name="broken.yaml")
    with pytest.raises(GraceInputError, match=r"broken\.yaml:3: invalid YAML"):
        load_config(str(path))


def test_missing_or_non_mapping_file(tmp_path):
    with pytest.raises(GraceInputError, match="config file not found: .*nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(GraceInputError, match="must be a mapping of keys to values"):
        load_config(str(write(tmp_path, "- a\n- b\n")))


@pytest.mark.parametrize(
    "value, expected",
    [("true", True), ("Yes", True), ("1", True), ("false", False), ("no", False), (False, False)],
)
def test_bool_parsing(value, expected):
    assert load_config(overrides={"model.lora": value}).model.lora is expected


@pytest.mark.parametrize("value, expected", [("null", None), ("None", None), (None, None), ("2.5", 2.5)])
def test_optional_parsing(value, expected):
    assert load_config(overrides={"optim.dual_clip": value}).optim.dual_clip == expected


def test_null_in_yaml_for_an_optional_field(tmp_path):
    cfg = load_config(str(write(tmp_path, "optim:\n  dual_clip: null\ndata:\n  path: ~\n")))
    assert cfg.optim.dual_clip is None and cfg.data.path is None


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("mode", "semi", "invalid config: mode 'semi' (choose supervised, unsupervised)"),
        ("reward.variant", "x", "invalid config: reward.variant 'x' (choose paper, reference, decoupled)"),
        ("method", "dpo", "invalid config: method 'dpo' (choose grace, infonce, simcse, llm2vec-gen)"),
        ("rollout.num_rollouts", "1", "invalid config: rollout.num_rollouts must be >= 2 (a group) (got 1)"),
        ("rollout.decode", "jit", "invalid config: rollout.decode 'jit' (choose auto, static, compiled, hf)"),
    ],
)
def test_invalid_choices(key, value, expected):
    with pytest.raises(GraceInputError) as err:
        load_config(overrides={key: value})
    assert str(err.value) == expected


def test_dotted_flattens_a_nested_config_and_trackers_get_scalars():
    from grace.config.overrides import dotted
    from grace.training.trackers import flat_config

    nested = {"seed": 3, "optim": {"learning_rate": 1e-5, "betas": [0.9, 0.99]},
              "rollout": {"sampling": {"top_p": None}}}
    assert dotted(nested) == {"seed": 3, "optim.learning_rate": 1e-5, "optim.betas": [0.9, 0.99],
                              "rollout.sampling.top_p": None}
    assert flat_config(nested) == {"seed": 3, "optim.learning_rate": 1e-5, "optim.betas": "[0.9, 0.99]",
                                   "rollout.sampling.top_p": "None"}
    cfg = TrainConfig()
    assert dotted(cfg.to_dict())["optim.learning_rate"] == cfg.optim.learning_rate


def test_encode_pooling_is_null_or_a_pooling_and_sup_nli_reads_balanced():
    assert TrainConfig().rollout.encode_pooling is None
    assert load_config("sup-nli").rollout.encode_pooling == "balanced"
    assert load_config("sup-nli").rollout.pooling == "mean"  # its rewards: the paper's pooling
    assert load_config("sup-nli", {"rollout.encode_pooling": "null"}).rollout.encode_pooling is None
    with pytest.raises(GraceInputError, match="encode_pooling 'max'"):
        load_config(None, {"rollout.encode_pooling": "max"})
    assert load_config("unsup-wiki", {"rollout.encode_pooling": "text:0.7"}).rollout.encode_pooling == "text:0.7"
    with pytest.raises(GraceInputError, match=r"encode_pooling 'text:1.5' \(choose null, mean, balanced or text:W"):
        load_config(None, {"rollout.encode_pooling": "text:1.5"})
