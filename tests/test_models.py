"""The model layer on the real bundled models: conversion once, reuse, clear errors for bad specs."""

from __future__ import annotations

import pytest

from assistant.llm.generate import GenerationSettings, Generator
from assistant.llm.models import (
    ModelSpecError,
    bundled_gguf,
    converted_dir,
    load_llm,
    resolve_llm_dir,
)
from tests.conftest import run_cli


def test_bundled_model_converts_once_then_reuses_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = load_llm("bundled")
    target = converted_dir(bundled_gguf())
    assert first.converted_now and target.is_relative_to(tmp_path)
    weights = target / "model.safetensors"
    assert weights.exists() and (target / "tokenizer.json").exists()
    assert first.tokenizer.chat_template, "the chat template must survive conversion"
    stamp = weights.stat().st_mtime_ns

    second = load_llm("bundled")
    assert not second.converted_now
    assert second.path == str(target) and weights.stat().st_mtime_ns == stamp
    assert first.device == "cpu" or first.dtype == "bfloat16"

    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    text = "".join(Generator(second).stream(messages, GenerationSettings(max_new_tokens=12)))
    assert "paris" in text.lower()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-such-org/no-such-model", "not in the local cache and the hub is unreachable"),
        ("/nonexistent/model.gguf", "no such file"),
        ("definitely not a model!", "not `bundled`"),
    ],
)
def test_bad_specs_fail_with_one_clear_line(spec, message):
    with pytest.raises(ModelSpecError, match=message) as info:
        resolve_llm_dir(spec)
    assert spec in str(info.value) and "\n" not in str(info.value)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelSpecError, match="neither a model directory"):
        resolve_llm_dir(str(tmp_path))


def test_cli_unknown_model_prints_error_not_traceback():
    result = run_cli("assistant", "ask", "What are your branch hours?", "--domain", "bank",
                     "--model", "no-such-org/no-such-model", timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: model spec 'no-such-org/no-such-model'")


def test_bundled_gguf_can_come_from_a_file_outside_the_wheel(tmp_path, monkeypatch):
    """RA_BUNDLED_GGUF names a copy of the file (a GPU machine without a package index), or fails clearly."""
    wheel_file = bundled_gguf()
    copy = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    copy.symlink_to(wheel_file)
    monkeypatch.setenv("RA_BUNDLED_GGUF", str(copy))
    assert bundled_gguf() == copy
    assert resolve_llm_dir("bundled", convert=False)[0] == str(copy)
    monkeypatch.setenv("RA_BUNDLED_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelSpecError, match="RA_BUNDLED_GGUF=.*missing.gguf: no such file"):
        resolve_llm_dir("bundled")
