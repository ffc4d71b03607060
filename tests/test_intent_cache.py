"""A pack's intent classifier is trained once per intents file, embedder and mode, then reused from the data
directory or, in a new data directory, from the user cache."""

from __future__ import annotations

import pytest

from assistant.packs import load_pack
from assistant.pipeline import ensure_classifier
from assistant.understanding.intents import IntentClassifier


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "regulated-assistant" / "intents"


def test_a_new_data_directory_reuses_the_cached_classifier(tmp_path, cache, embedder, monkeypatch):
    pack = load_pack("bank")
    first = ensure_classifier(pack, embedder, tmp_path / "one", mode="linear")
    [saved] = list((tmp_path / "one" / "intents").iterdir())
    assert saved.name.startswith("bank-linear-") and (cache / saved.name / "classifier.json").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although a cached classifier exists")

    monkeypatch.setattr(IntentClassifier, "train", no_training)
    second = ensure_classifier(pack, embedder, tmp_path / "two", mode="linear")
    messages = ["how do i freeze my debit card", "what's the weather in paris", "i want to talk to a person"]
    assert [p.label for p in second.predict(messages)] == [p.label for p in first.predict(messages)]
    assert first.predict(messages)[2].label == "human_agent"
    with pytest.raises(AssertionError, match="trained again"):  # another mode is another classifier
        ensure_classifier(pack, embedder, tmp_path / "two", mode="finetune")


def test_a_damaged_classifier_is_trained_again(tmp_path, cache, embedder):
    pack = load_pack("bank")
    ensure_classifier(pack, embedder, tmp_path / "data", mode="linear")
    for place in (tmp_path / "data" / "intents", cache):
        [saved] = list(place.iterdir())
        (saved / "classifier.json").write_text("{ not json")
    again = ensure_classifier(pack, embedder, tmp_path / "data", mode="linear")
    assert again.predict_one("i want to talk to a person").label == "human_agent"
    assert (saved / "classifier.json").read_text().startswith("{\n")


def test_nowhere_to_save_the_classifier_is_a_clear_error(tmp_path, embedder, monkeypatch):
    from index.errors import SettingError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    with pytest.raises(SettingError, match="cannot save the bank pack's intent classifier.*writable"):
        ensure_classifier(load_pack("bank"), embedder, blocker / "data", mode="linear")


def test_a_classifier_saved_only_in_the_cache_is_used(tmp_path, embedder, monkeypatch):
    """A data directory that cannot be written (here: under a file) still gets the classifier the cache keeps."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    classifier = ensure_classifier(load_pack("bank"), embedder, blocker / "data", mode="linear")
    assert classifier.predict_one("i want to talk to a person").label == "human_agent"
    assert str(classifier.root).startswith(str(tmp_path / "cache"))
