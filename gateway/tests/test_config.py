"""Config: paired valid/invalid settings with messages a person can act on."""

from __future__ import annotations

import tomllib

import pytest

from terrapin.gateway.config import SCHEMA, load_config, parse_config, render_config, validate
from terrapin.gateway.errors import ConfigError


def test_defaults_and_rendered_file_round_trip(tmp_path):
    cfg = validate({})
    assert cfg.mqtt.port == 1883 and cfg.policy.replay_window == 4096
    text = render_config({"mqtt": {"port": 1999}})
    assert "# MQTT version" in text or "#" in text
    path = tmp_path / "g.toml"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.mqtt.port == 1999
    assert set(tomllib.loads(text)) == set(SCHEMA)


def test_other_stages_sections_pass_through():
    cfg = validate({"chain": {"rpc": "http://x", "anything": [1, 2]}, "rewards": {}})
    assert cfg.section("chain") == {"rpc": "http://x", "anything": [1, 2]}
    assert cfg.section("batch") == {}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"mqtt": {"port": 0}}, "mqtt.port must be a TCP port"),
        ({"mqtt": {"port": "1883"}}, "mqtt.port must be an integer"),
        ({"mqtt": {"prot": 1}}, "unknown setting mqtt.prot"),
        ({"mqtt": {"protocol": "4"}}, "mqtt.protocol must be one of"),
        ({"policy": {"replay_window": -1}}, "policy.replay_window must be at least 0"),
        ({"policy": {"ranges": {"Cel": [10, 0]}}}, "needs [low, high]"),
        ({"api": {"enabled": "yes"}}, "api.enabled must be true or false"),
        ({"pipeline": {"stages": ["bach"]}}, "unknown stage 'bach'"),
        ({"pipeline": {"stages": ["my.module:factory"]}}, "unknown stage 'my.module:factory'"),
        ({"pipeline": {"stages": [5]}}, "entries must be stage names, not 5"),
        ({"pipeline": {"stages": ["batch", "batch"]}}, "lists stage 'batch' twice"),
        ({"pipeline": {"stages": "batch"}}, "pipeline.stages must be a list"),
        ({"pipeline": {"workers": 9}}, "pipeline.workers must be one of"),
        ({"log": {"level": "loud"}}, "log.level must be one of"),
        ({"store": 5}, "must be a [store] section"),
        ({"chain": 5}, "must be a [section]"),
        ({"mqtt": {"keepalive": True}}, "mqtt.keepalive must be an integer"),
    ],
)
def test_invalid_settings_say_what_is_wrong(data, message):
    with pytest.raises(ConfigError) as err:
        validate(data)
    assert message in str(err.value)


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError) as err:
        validate({"store": {"pth": "x"}})
    assert err.value.hint == "did you mean 'path'?"


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.toml")
    assert "gateway init" in err.value.hint
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_relative_paths_are_relative_to_the_file(tmp_path):
    p = tmp_path / "g.toml"
    p.write_text('[store]\npath = "db/x.db"\n[mqtt]\npassword_file = "s"\n')
    cfg = load_config(p)
    assert cfg.store.path == str(tmp_path / "db" / "x.db")
    assert cfg.mqtt.password_file == str(tmp_path / "s")


def test_a_misspelled_stage_suggests_the_close_one():
    with pytest.raises(ConfigError) as err:
        validate({"pipeline": {"stages": ["batch", "ancor"]}})
    assert err.value.hint == "did you mean 'anchor'?"
    with pytest.raises(ConfigError) as err:
        validate({"pipeline": {"stages": ["zzz"]}})
    assert err.value.hint == "stages: batch, anchor, rewards"


def test_stage_names_switch_stages_on():
    assert validate({}).pipeline.stages == []
    cfg = validate({"pipeline": {"stages": ["rewards", "batch"]}})
    assert cfg.pipeline.stages == ["rewards", "batch"]


def test_old_module_entries_become_names_with_one_warning(caplog):
    old = [
        "terrapin.gateway.chain.stage:batcher",
        "terrapin.gateway.chain.stage:anchorer",
        "terrapin.gateway.chain.rewards_stage:rewards",
    ]
    with caplog.at_level("WARNING", logger="terrapin.gateway.config"):
        cfg = validate({"pipeline": {"stages": old}})
    assert cfg.pipeline.stages == ["batch", "anchor", "rewards"]
    assert len(caplog.records) == 1, caplog.text
    assert 'stages = ["batch", "anchor", "rewards"]' in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="terrapin.gateway.config"):
        moved = validate({"pipeline": {"stages": ["terrapin.gateway.rewards.stage:rewards"]}})
    assert moved.pipeline.stages == ["rewards"] and len(caplog.records) == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="terrapin.gateway.config"):
        validate({"pipeline": {"stages": ["batch", "anchor"]}})
    assert not caplog.records


def test_the_rendered_stages_comment_is_a_valid_setting():
    text = render_config()
    line = next(x for x in text.splitlines() if "[pipeline] stages =" in x)
    setting = line.removeprefix("#").strip().removeprefix("[pipeline]").strip()
    cfg = validate({"pipeline": tomllib.loads(setting)})
    assert cfg.pipeline.stages == ["batch", "anchor", "rewards"]


def test_a_misspelled_section_is_refused_with_file_line_and_suggestion(tmp_path):
    path = tmp_path / "gateway.toml"
    text = render_config().replace("[pipeline]", "[pipline]", 1)
    path.write_text(text)
    line = text.splitlines().index("[pipline]") + 1
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"unknown section [pipline] in {path.resolve()}, line {line}"
    assert err.value.hint == "did you mean [pipeline]?"
    assert err.value.exit_code == 2


@pytest.mark.parametrize(
    "text, message, hint",
    [
        ("[chian]\nnetwork = 'embedded'\n", "unknown section [chian]", "did you mean [chain]?"),
        ("[reward.x]\na = 1\n", "unknown section [reward], line 1", "did you mean [rewards]?"),
        ("[zzz]\n", "unknown section [zzz]", "sections: mqtt, broker"),
        ("[api]\n\nprot = 5\n", "unknown setting api.prot, line 3", "did you mean 'port'?"),
    ],
)
def test_unknown_names_in_text_name_their_line(text, message, hint):
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert message in str(err.value)
    assert err.value.hint.startswith(hint)


def test_stage_sections_are_still_passed_through():
    cfg = parse_config("[chain]\nnetwork = 'embedded'\n[rewards]\nbudget = '1'\n")
    assert cfg.section("chain") == {"network": "embedded"}
    assert cfg.section("rewards") == {"budget": "1"}
