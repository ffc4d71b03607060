"""One settings object, read once: defaults, then a settings file, then the environment, then the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.config import ENVIRONMENT, AssistantConfig
from index.errors import SettingError


def test_each_source_overrides_the_one_before(tmp_path, monkeypatch):
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    settings = tmp_path / "settings.toml"
    settings.write_text('[assistant]\nanswer_mode = "quote"\npool_k = 20\nmodel = "from-file.gguf"\n')
    assert AssistantConfig.load().pool_k == 12 and AssistantConfig.load().answer_mode == "evidence"
    from_file = AssistantConfig.load(settings)
    assert (from_file.answer_mode, from_file.pool_k, from_file.model) == ("quote", 20, "from-file.gguf")
    monkeypatch.setenv("RA_MODEL", "from-env.gguf")
    monkeypatch.setenv("RA_DATA_DIR", str(tmp_path / "data"))
    from_env = AssistantConfig.load(settings)
    assert from_env.model == "from-env.gguf" and from_env.pool_k == 20 and from_env.data_dir == tmp_path / "data"
    given = AssistantConfig.load(settings, model="given.gguf", pool_k=None)  # None: not given on the command line
    assert given.model == "given.gguf" and given.pool_k == 20
    monkeypatch.setenv("RA_SETTINGS", str(settings))  # the file named by the environment
    assert AssistantConfig.load().answer_mode == "quote"


def test_bad_settings_are_user_errors(tmp_path):
    with pytest.raises(SettingError, match="--answer-mode must be one of"):
        AssistantConfig.load(env={"RA_ANSWER_MODE": "poetry"})
    with pytest.raises(SettingError, match="--intent-mode must be one of finetune, linear"):
        AssistantConfig.load(env={"RA_INTENT_MODE": "regex"})
    assert AssistantConfig.load(env={}).intent_mode == "finetune"
    assert AssistantConfig.load(env={"RA_INTENT_MODE": "linear"}).intent_mode == "linear"
    assert AssistantConfig.load(env={}).spelling is True
    assert AssistantConfig.load(env={}).caution == "standard"
    assert AssistantConfig.load(env={"RA_CAUTION": "strict"}).caution == "strict"
    with pytest.raises(SettingError, match="--caution must be one of relaxed, standard, cautious, strict"):
        AssistantConfig.load(env={"RA_CAUTION": "paranoid"})
    assert AssistantConfig.load(env={"RA_SPELLING": "off"}).spelling is False
    with pytest.raises(SettingError, match="RA_SPELLING='maybe': spelling takes 1/0"):
        AssistantConfig.load(env={"RA_SPELLING": "maybe"})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('modle = "typo.gguf"\n')
    with pytest.raises(SettingError, match="unknown setting.*modle"):
        AssistantConfig.load(unknown, env={})
    broken = tmp_path / "broken.toml"
    broken.write_text('model = "unterminated\n')
    with pytest.raises(SettingError, match="not valid TOML"):
        AssistantConfig.load(broken, env={})
    with pytest.raises(SettingError, match="cannot read the settings file"):
        AssistantConfig.load(tmp_path / "missing.toml", env={})


def test_cli_and_ui_read_the_same_settings(tmp_path, monkeypatch):
    """The CLI used to ignore RA_MODEL while the UI honoured it: both now go through AssistantConfig.load."""
    from assistant.__main__ import config_from
    from assistant.__main__ import parser as cli_parser
    from ui.__main__ import parser as ui_parser

    monkeypatch.setenv("RA_MODEL", "from-env.gguf")
    monkeypatch.setenv("RA_ANSWER_MODE", "quote")
    cli = config_from(cli_parser().parse_args(["ask", "hi"]))
    assert (cli.model, cli.answer_mode) == ("from-env.gguf", "quote")
    assert config_from(cli_parser().parse_args(["ask", "hi", "--answer-mode", "generative"])).answer_mode == "generative"
    assert config_from(cli_parser().parse_args(["ask", "hi", "--intent-mode", "linear"])).intent_mode == "linear"
    ui = ui_parser().parse_args([])
    ui_config = AssistantConfig.load(ui.settings, model=ui.model, embedder=ui.embedder, backend=ui.backend)
    assert (ui_config.model, ui_config.answer_mode) == ("from-env.gguf", "quote")
    assert ui_parser().parse_args(["--intent-mode", "linear"]).intent_mode == "linear"
    assert Path(cli.data_dir) == Path(ui_config.data_dir)
