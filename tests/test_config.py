"""Settings: declared once, the shipped file is generated from the declarations and parses."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from memspace import config
from memspace.errors import InvalidArgument

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_conf_parses_and_matches_declarations():
    text = (ROOT / "conf" / "memspace.toml").read_text()
    assert text == config.render_toml(), "conf/memspace.toml is stale: python -m memspace.config toml"
    cfg = config.load(ROOT / "conf" / "memspace.toml", env={})
    for s in config.SETTINGS:
        assert cfg[s.key] == s.default
        assert cfg.source(s.key).endswith("memspace.toml")
    # every setting appears in the file with its documentation line
    table = tomllib.loads(text)
    flat = dict(config._flatten(table))
    assert set(flat) == set(config.BY_KEY)


def test_docs_config_matches_declarations():
    assert (ROOT / "docs" / "config.md").read_text() == config.render_markdown()


def test_env_overrides_file_and_defaults(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text('max_active_workers = 7\n[wal]\nfsync = "never"\n')
    cfg = config.load(f, env={"MEMSPACE_WAL_FSYNC": "interval", "MEMSPACE_HTTP_BIND": "127.0.0.1:0"})
    assert cfg.max_active_workers == 7 and cfg.source("max_active_workers") == str(f)
    assert cfg.wal.fsync == "interval" and cfg.source("wal.fsync") == "$MEMSPACE_WAL_FSYNC"
    assert cfg["http.bind"] == "127.0.0.1:0"
    assert cfg.restart_intensity.n == 5


def test_memspace_config_env_names_the_file(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text("[tiers]\nhot_capacity = 10\n")
    assert config.load(env={"MEMSPACE_CONFIG": str(f)}).tiers.hot_capacity == 10


def test_overrides_win_and_are_validated():
    cfg = config.load(env={"MEMSPACE_LIMITS_MAX_K": "5"}, overrides={"data_root": "/x", "limits.max_k": "50"})
    assert cfg.data_root == "/x" and cfg.limits.max_k == 50 and cfg.source("limits.max_k") == "override"
    assert cfg.replace({"wal.fsync": "never"}).wal.fsync == "never"
    with pytest.raises(InvalidArgument, match="not one of"):
        cfg.replace({"wal.fsync": "sometimes"})


@pytest.mark.parametrize(
    "env, message",
    [
        ({"MEMSPACE_MAX_ACTIVE_WORKERS": "many"}, r"max_active_workers from \$MEMSPACE_MAX_ACTIVE_WORKERS"),
        ({"MEMSPACE_REQUIRE_EXPLICIT_SPACE": "perhaps"}, "not a valid bool"),
        ({"MEMSPACE_WAL_FSYNC": "sometimes"}, "not one of always, interval, never"),
        ({"MEMSPACE_HEARTBEAT_S": "-1"}, "below the minimum"),
    ],
)
def test_bad_env_values_name_setting_and_source(env, message):
    with pytest.raises(InvalidArgument, match=message):
        config.load(env=env)


def test_unknown_key_and_bad_toml_are_errors(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text("[wal]\nfsynk = 'always'\n")
    with pytest.raises(InvalidArgument, match="unknown setting 'wal.fsynk'"):
        config.load(f, env={})
    f.write_text("max_k = [\n")
    with pytest.raises(InvalidArgument, match="not valid TOML"):
        config.load(f, env={})
    with pytest.raises(InvalidArgument, match="does not exist"):
        config.load(tmp_path / "missing.toml", env={})


def test_bool_and_int_types_are_strict(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text("max_active_workers = true\n")
    with pytest.raises(InvalidArgument, match="not a valid int"):
        config.load(f, env={})
    f.write_text("auto_create_spaces = 1\n")
    with pytest.raises(InvalidArgument, match="not a valid bool"):
        config.load(f, env={})
