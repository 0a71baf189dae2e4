from pathlib import Path

import pytest

from s2s import config
from s2s.errors import ConfigError


def base(**data) -> dict:
    return {"data": {"train": "x/train", **data}}


def test_defaults_and_roundtrip():
    cfg = config.from_dict(base())
    assert cfg.model.encoder.cell == "lstm"
    again = config.from_dict(config.to_dict(cfg))
    assert again == cfg
    assert config.diff(cfg, again) == []


def test_the_same_file_named_by_another_path_is_not_a_difference(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()
    cfg = config.from_dict(base())
    same = config.from_dict(base(train=str(tmp_path / "x" / ".." / "x" / "train")))
    other = config.from_dict(base(train="y/train"))
    assert config.diff(cfg, same) == []
    assert config.diff(cfg, other) == ["data.train"]
    assert config.value(other, "data.train") == "y/train"


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(
        ConfigError, match=r"unknown config key 'model\.encoder\.cel'.*'model\.encoder\.cell'"
    ):
        config.from_dict({**base(), "model": {"encoder": {"cel": "gru"}}})


def test_unknown_top_level_section():
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        config.from_dict({**base(), "trian": {}})


def test_bad_choice_lists_valid_values():
    with pytest.raises(
        ConfigError,
        match="'model.attention' is 'bahdanau'; valid values: none, additive, multiplicative",
    ):
        config.from_dict({**base(), "model": {"attention": "bahdanau"}})


def test_wrong_type():
    with pytest.raises(ConfigError, match="'train.max_steps' must be an integer"):
        config.from_dict({**base(), "train": {"max_steps": "ten"}})
    with pytest.raises(ConfigError, match="'model.encoder.bidirectional' must be true or false"):
        config.from_dict({**base(), "model": {"encoder": {"bidirectional": "yes"}}})


def test_contradiction_dot_attention_sizes():
    with pytest.raises(ConfigError, match="dot"):
        config.from_dict(
            {
                **base(),
                "model": {
                    "attention": "multiplicative",
                    "multiplicative_form": "dot",
                    "encoder": {"hidden_size": 8, "bidirectional": True},
                    "decoder": {"hidden_size": 8},
                },
            }
        )
    ok = config.from_dict(
        {
            **base(),
            "model": {
                "attention": "multiplicative",
                "multiplicative_form": "dot",
                "encoder": {"hidden_size": 4, "bidirectional": True},
                "decoder": {"hidden_size": 8},
            },
        }
    )
    assert ok.model.multiplicative_form == "dot"


def test_copied_bridge_needs_a_bridge_and_equal_state_sizes():
    def model(**kw):
        return {**base(), "model": {"bridge_type": "copy", **kw}}

    with pytest.raises(ConfigError, match=r"encoder's state size \(16: .* \(8\); use 'dense'"):
        config.from_dict(model(encoder={"hidden_size": 8}, decoder={"hidden_size": 8}))
    with pytest.raises(ConfigError, match="'copy' needs model.bridge true"):
        config.from_dict(
            model(bridge=False, encoder={"hidden_size": 4}, decoder={"hidden_size": 8})
        )
    ok = config.from_dict(model(encoder={"hidden_size": 4}, decoder={"hidden_size": 8}))
    assert ok.model.bridge_type == "copy"


def test_overrides_are_typed_and_validated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: x/train}\n")
    cfg = config.load(
        path, ["model.encoder.cell=gru", "train.max_steps=200", "data.reverse_source=true"]
    )
    assert cfg.model.encoder.cell == "gru"
    assert cfg.train.max_steps == 200
    assert cfg.data.reverse_source is True
    with pytest.raises(ConfigError, match="unknown config key 'model.encoder.size'"):
        config.load(path, ["model.encoder.size=3"])
    with pytest.raises(ConfigError, match="valid values: lstm, gru, rnn"):
        config.load(path, ["model.decoder.cell=transformer"])


def test_numbers_written_with_an_exponent_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: x/train}\ntrain: {lr: 3e-4}\n")  # YAML 1.1: a string
    assert config.load(path).train.lr == pytest.approx(3e-4)
    cfg = config.load(
        path, ["train.lr=1e-3", "train.min_lr=1E-5", "train.update_ratio_band=[1e-5, 2e-2]"]
    )
    assert (cfg.train.lr, cfg.train.min_lr) == (1e-3, 1e-5)
    assert cfg.train.update_ratio_band == (1e-5, 2e-2)
    with pytest.raises(ConfigError, match="'train.lr' must be a number, got '1e-3x'"):
        config.load(path, ["train.lr=1e-3x"])


def test_a_key_given_twice_is_refused_with_its_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: x/train}\ntrain: {seed: 5}\nmodel: {}\ntrain: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"key 'train' appears twice.*lines 2 and 4"):
        config.load(path)
    path.write_text("data: {train: x/train, train: y/train}\n")  # nested, one line
    with pytest.raises(ConfigError, match="key 'train' appears twice"):
        config.load(path)
    # a merge key (<<: *anchor) may be overridden, as YAML says
    path.write_text("x: &t {train: x/train, valid: x/val}\ndata:\n  <<: *t\n  valid: y/val\n")
    assert config.loading.load_yaml_text(path.read_text())["data"] == {
        "train": "x/train",
        "valid": "y/val",
    }


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan"])
def test_numbers_that_are_not_finite_are_refused(tmp_path, value):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: x/train}\n")
    with pytest.raises(ConfigError, match=r"'train\.lr' must be a (finite )?number"):
        config.load(path, [f"train.lr={value}"])
    with pytest.raises(ConfigError, match=r"'train\.max_minutes' must be a (finite )?number"):
        config.load(path, [f"train.max_minutes={value}"])


def test_seeds_are_64_bit_and_not_negative(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: x/train}\n")
    assert config.load(path, [f"train.seed={2**63 - 1}"]).train.seed == 2**63 - 1
    for seed in (2**63, 99999999999999999999, -1):
        with pytest.raises(ConfigError, match="'train.seed' must be in"):
            config.load(path, [f"train.seed={seed}"])


def test_a_mapping_set_on_a_section_merges_into_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: x/train}\nmodel: {encoder: {hidden_size: 16, layers: 2}}\n")
    cfg = config.load(path, ["model.encoder={cell: gru}"])
    assert (cfg.model.encoder.cell, cfg.model.encoder.hidden_size) == ("gru", 16)
    assert cfg.model.encoder.layers == 2
    cfg = config.load(path, ["model={encoder: {layers: 3}}"])  # deeper: merged at every level
    assert (cfg.model.encoder.layers, cfg.model.encoder.hidden_size) == (3, 16)


def test_an_unquoted_no_for_a_string_is_explained(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: x/train, src_lang: no}\n")  # Norwegian, read as false
    with pytest.raises(ConfigError, match="'data.src_lang' must be a string.*quote it"):
        config.load(path)


def test_a_short_run_of_a_linear_schedule_loads_and_is_warned_about():
    from s2s.training.schedules import idle_schedule

    train = {"lr_schedule": "linear", "decay_start": 2000, "max_steps": 200}
    cfg = config.from_dict({**base(), "train": train})  # a quick try of the default config
    assert "never decays" in idle_schedule(cfg.train)
    with pytest.raises(ConfigError, match="'linear' needs train.decay_steps or train.max_steps"):
        config.from_dict({**base(), "train": train | {"max_steps": 0}})


def test_an_activation_for_a_cell_that_has_none_is_refused():
    with pytest.raises(ConfigError, match="model.decoder.activation 'relu' applies to cell rnn"):
        config.from_dict({**base(), "model": {"decoder": {"cell": "gru", "activation": "relu"}}})
    cfg = config.from_dict({**base(), "model": {"encoder": {"cell": "rnn", "activation": "relu"}}})
    assert cfg.model.encoder.activation == "relu"


def test_env_expansion(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: '${MY_DATA}/train'}\n")
    monkeypatch.setenv("MY_DATA", "/somewhere")
    assert config.load(path).data.train == "/somewhere/train"
    monkeypatch.delenv("MY_DATA")
    assert config.load(path).data.train == "${MY_DATA}/train"


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "nope.yaml")
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(ConfigError, match="folder.yaml is a folder"):
        config.load(tmp_path / "folder.yaml")


def test_character_coverage_outside_sentencepieces_range_is_refused():
    with pytest.raises(ConfigError, match=r"character_coverage' must be in \[0\.98, 1\], got 0\.9"):
        config.from_dict(base(tokenizer={"character_coverage": 0.9}))
    assert config.from_dict(base(tokenizer={"character_coverage": 0.98}))


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("train", "max_steps", -5, "'train.max_steps' must be >= 0, got -5"),
        ("train", "lr", 0.0, "'train.lr' must be > 0, got 0.0"),
        ("train", "betas", [0.9, 1.0], r"'train.betas' must be in \[0, 1\), got \(0.9, 1.0\)"),
        ("train", "lr_decay", 0.0, r"'train.lr_decay' must be in \(0, 1\], got 0.0"),
        ("train", "accumulate", 0, "'train.accumulate' must be >= 1, got 0"),
        ("train", "valid_batch_size", 0, "'train.valid_batch_size' must be > 0"),
        ("model", "dropout", 1.0, r"'model.dropout' must be in \[0, 1\), got 1.0"),
        ("data", "batch_size", -1, "'data.batch_size' must be > 0, got -1"),
    ],
)
def test_values_outside_their_range_name_the_key_and_the_range(section, key, value, message):
    data = base()
    data.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=message):
        config.from_dict(data)


def test_char_lm_ranges_are_checked_too():
    for key, value in (("max_steps", 0), ("bptt", -1), ("lr_gamma", 1.5)):
        with pytest.raises(ConfigError, match=f"'train.{key}' must be"):
            config.lm_from_dict({"data": {"text": "x"}, "train": {key: value}})


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parent.parent / "configs").glob("**/*.yaml")),
    ids=lambda p: p.name,
)
def test_every_shipped_config_loads(path):
    from s2s.experiments.compare import plan, read_sweep

    data = config.read_yaml(path)
    if {"variants", "grid", "random"} & set(data):
        runs = plan(read_sweep(path), Path("unused"))
        assert runs and all(r.cfg.data.train for r in runs)
    elif data.get("data", {}).get("text"):
        cfg = config.load_lm(path)
        assert all(cfg.data.text)
    else:
        assert config.load(path).data.train


def test_the_rnn_preset_is_the_speed_tables_rnn_shape():
    """configs/multi30k_en_de_rnn.yaml is the model and batching that scripts/bench_speed.sh
    times against OpenNMT-py's RNN recipe (its RNN_SHAPE on the default config); only its
    schedule and OpenNMT-py's forget-gate bias of 0 differ."""
    import re
    import shlex

    root = Path(__file__).parent.parent
    script = (root / "scripts" / "bench_speed.sh").read_text()
    shape = shlex.split(re.search(r"^RNN_SHAPE=\((.*?)\)", script, re.S | re.M).group(1))
    benched = config.load(root / "configs" / "multi30k_en_de.yaml", shape)
    preset = config.load(root / "configs" / "multi30k_en_de_rnn.yaml")
    schedule = {"train.max_steps", "train.decay_start", "train.valid_every", "train.save_every"}
    assert set(config.diff(benched, preset)) == schedule | {"model.init.forget_bias"}
    assert preset.model.init.forget_bias == 0.0
