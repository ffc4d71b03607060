"""The evidence step's sentence vectors saved on disk and read back at the next start (real encoder, real files)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from assistant.answering import unit_vectors
from assistant.answering.evidence import EvidenceSelector, _with_context, units
from index.search import Hit

HITS = [
    Hit(chunk_id="a", source="debit_cards.md", title="Debit cards", score=0.0, headings=["Fees"],
        text="A replacement card costs $5. Express delivery is $25 and arrives in 2 business days."),
    Hit(chunk_id="b", source="branches.md", title="Branches", score=0.0, headings=["Hours"],
        text="Branches are open 9 a.m. to 5 p.m., Monday to Friday. Saturday hours are 9 a.m. to noon."),
]


class Counting:
    """The real encoder, counting the texts it is asked to embed."""

    def __init__(self, embedder):
        self.inner, self.texts = embedder, 0
        # a name of its own: selectors of one encoder share their vectors in memory, and the session's
        # assistants must keep theirs
        self.name = f"{embedder.name} (counted)"
        self.resolved_backend, self.path = embedder.resolved_backend, embedder.path

    def encode(self, texts, **kwargs):
        self.texts += len(texts)
        return self.inner.encode(texts, **kwargs)


@pytest.fixture
def encoder(embedder):
    return Counting(embedder)


def fresh(encoder) -> EvidenceSelector:
    selector = EvidenceSelector(encoder)
    selector._cache.clear()  # a new process: nothing in memory
    return selector


def test_vectors_saved_once_are_read_back_instead_of_embedded_again(encoder, tmp_path):
    first = fresh(encoder)
    first.warm(HITS)
    embedded = encoder.texts
    texts = [t for h in HITS for u in units(h.text) for t in (_with_context(h, u), u)]
    assert embedded == len(set(texts)) > 0
    assert unit_vectors.persist(first, tmp_path, HITS) == len(set(texts))
    before = {t: first._cache[t].copy() for t in texts}

    second = fresh(encoder)
    assert unit_vectors.restore(second, tmp_path) == len(set(texts))
    second.warm(HITS)
    assert encoder.texts == embedded  # nothing embedded again
    for text, vector in before.items():
        np.testing.assert_array_equal(second._cache[text], vector)
    assert unit_vectors.persist(second, tmp_path, HITS) == 0  # nothing new: the file is left as it is
    # a new passage: only its sentences are embedded, and the file then holds both
    more = [*HITS, Hit(chunk_id="c", source="loans.md", title="Loans", score=0.0, text="Loan payments are due monthly.")]
    second.warm(more)
    assert encoder.texts == embedded + 2
    assert unit_vectors.persist(second, tmp_path, more) == len(set(texts)) + 2


def test_a_damaged_file_is_ignored_and_written_again(encoder, tmp_path, caplog):
    selector = fresh(encoder)
    selector.warm(HITS)
    unit_vectors.persist(selector, tmp_path, HITS)
    [file] = tmp_path.glob("*.npz")
    file.write_bytes(file.read_bytes()[:200])  # cut short, as by a full disk
    again = fresh(encoder)
    with caplog.at_level(logging.WARNING):
        assert unit_vectors.restore(again, tmp_path) == 0
    assert "computed again" in caplog.text
    again.warm(HITS)
    assert unit_vectors.persist(again, tmp_path, HITS) > 0
    assert unit_vectors.restore(fresh(encoder), tmp_path) > 0


def test_a_folder_that_cannot_be_written_costs_only_time(encoder, tmp_path, caplog):
    selector = fresh(encoder)
    selector.warm(HITS)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the folder should be")
    with caplog.at_level(logging.WARNING):
        assert unit_vectors.persist(selector, blocked / "vectors", HITS) == 0
    assert "next start" in caplog.text
    assert blocked.read_text() == "a file where the folder should be"
    assert unit_vectors.restore(fresh(encoder), blocked / "vectors") == 0


def test_another_model_or_back_end_gets_its_own_vectors(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"1234")
    one = SimpleNamespace(name="my-encoder", resolved_backend="torch", path=str(model))
    name = unit_vectors.fingerprint(one)
    assert name == unit_vectors.fingerprint(SimpleNamespace(**vars(one)))
    assert unit_vectors.fingerprint(SimpleNamespace(**{**vars(one), "resolved_backend": "onnx-int8"})) != name
    (model / "weights.bin").write_bytes(b"12345")  # retuned, or reinstalled
    assert unit_vectors.fingerprint(one) != name
    # an encoder without a model folder cannot be told apart: nothing is saved for it
    assert unit_vectors.fingerprint(SimpleNamespace(name="x", resolved_backend="torch", path=None)) is None


def test_the_assistant_saves_its_packs_vectors_after_warming_up(bank_bot):
    bank_bot.warming.join(600)
    folder = bank_bot.config.data_dir / "unit-vectors" / "bank"
    files = sorted(folder.glob("*.npz"))
    # the index's embedder, the larger encoder reading sentences in context, the tuned second opinion
    encoders = {bank_bot.embedder.name, bank_bot.selector.context_embedder.name}
    if bank_bot.second_opinion is not None:
        encoders.add(bank_bot.second_opinion.embedder.name)
    assert len(files) == len(encoders)
    for file in files:
        texts, vectors = unit_vectors._read(file)
        assert len(texts) == len(vectors) > 500  # every sentence of the pack
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_a_one_shot_assistant_reads_the_saved_vectors_and_embeds_nothing_more(bank_bot, monkeypatch):
    """`python -m assistant ask`: no background warm-up beside the one question; the last start's vectors are read."""
    from assistant import Assistant, AssistantConfig
    from assistant.answering import evidence

    bank_bot.warming.join(600)
    monkeypatch.setattr(evidence, "_SHARED_VECTORS", {})  # a new process: nothing in memory
    bot = Assistant(AssistantConfig(domain="bank", data_dir=bank_bot.config.data_dir), generator=bank_bot.generator,
                    embedder=bank_bot.embedder, warm=False)
    assert bot.warming is None
    assert len(bot.selector._cache) > 500 and len(bot.selector._context_cache) > 500
    response = bot.respond("What routing number do I give my employer for direct deposit?")
    assert "021555013" in response.answer
