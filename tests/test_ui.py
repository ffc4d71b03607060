"""UI building blocks without a browser: uploads through the Assistant, rendering (logins: test_auth.py)."""

from __future__ import annotations

import shutil

import pytest

from assistant.pipeline import Response, Source
from index.limits import MB, IngestLimits
from index.uploads import Uploader, UploadSettings
from tests.hostile import docx_bomb
from ui.app import (
    AssistantPool,
    UIConfig,
    build_demo,
    pending_choices,
    render_details,
    review_uploads,
    upload_documents,
    upload_summary,
)


@pytest.fixture
def bank_copy(data_dir, bank_bot, tmp_path):
    """A bank Assistant on its own copy of the session's data folder (uploads change the index)."""
    from assistant import Assistant, AssistantConfig

    target = tmp_path / "data"
    shutil.copytree(data_dir, target, ignore=shutil.ignore_patterns("audit.sqlite*", "uploads"))
    return Assistant(AssistantConfig(domain="bank", data_dir=target), generator=bank_bot.generator,
                     embedder=bank_bot.embedder)


def test_upload_adds_good_files_refuses_bad_ones_and_survives_a_restart(bank_copy, tmp_path):
    from assistant import Assistant

    before = len(bank_copy.searcher.store)
    files = tmp_path / "in"
    files.mkdir()
    (files / "zephyr.md").write_text("# Zephyr Day\n\nBranches close at 1:00 p.m. on Zephyr Day, 14 March.\n")
    (files / "empty.txt").write_text("")
    (files / "binary.pdf").write_bytes(b"\x00\xff not a pdf" * 100)
    (files / "latin1.txt").write_bytes("Café opening: the lobby café opens at 7:15 a.m.".encode("latin-1"))
    (files / "x.exe").write_bytes(b"MZ\x00")
    report = bank_copy.add_documents(sorted(files.iterdir()))
    assert sorted(report.added) == ["latin1.txt", "zephyr.md"]
    assert {name for name, _ in report.rejected} == {"empty.txt", "binary.pdf", "x.exe"}
    assert all(reason for _, reason in report.rejected)
    assert report.chunks > before
    hits = bank_copy.searcher.search("When do branches close on Zephyr Day?", k=2)
    assert hits[0].source == "uploads/zephyr.md"
    kept = sorted(p.name for p in (bank_copy.config.data_dir / "uploads" / "bank" / "uploads").iterdir())
    assert kept == ["latin1.txt", "zephyr.md"]
    # a new process (same data folder) keeps the uploads: the pack index is rebuilt around them
    again = Assistant(bank_copy.config, generator=bank_copy.generator, embedder=bank_copy.embedder)
    assert again.searcher.search("When do branches close on Zephyr Day?", k=2)[0].source == "uploads/zephyr.md"


def test_upload_of_only_bad_files_leaves_the_index_alone(bank_copy, tmp_path):
    version = bank_copy.searcher.store.version
    bad = tmp_path / "scan.docx"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    report = bank_copy.add_documents([bad])
    assert report.added == [] and report.rejected[0][0] == "scan.docx"
    assert bank_copy.searcher.store.version == version
    assert "Not added" in upload_summary(report) and "scan.docx" in upload_summary(report)


def test_details_panel_escapes_and_marks_emergencies():
    response = Response(answer="Call 911 now.", action="emergency", intent="medical_emergency",
                        intent_confidence=1.0, confidence=1.0, done=True,
                        sources=[Source(n=1, source="a<b>.md", title="<script>x</script>", text="t", score=0.5)])
    panel = render_details(response)
    assert "ra-emergency" in panel and "<script>" not in panel and "&lt;script&gt;" in panel


def test_details_panel_names_a_fixed_reply_rule_in_words(bank_bot):
    response = bank_bot.respond("are you a real person?")
    panel = render_details(response)
    assert "rule: bot disclosure" in panel and "_bot_disclosure" not in panel and "intent:" not in panel


def test_app_builds_with_upload_and_feedback_switched_off(bank_bot):
    pool = AssistantPool(bank_bot.config)
    demo = build_demo(pool, UIConfig(upload=False, feedback=False))
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert "upload-files" not in ids and "feedback-comment" not in ids and "chat" in ids
    full = build_demo(pool, UIConfig())
    ids = {getattr(block, "elem_id", None) for block in full.blocks.values()}
    assert {"upload-files", "feedback-comment", "handoff", "details"} <= ids


def test_ui_upload_is_attributed_audited_and_private_until_an_admin_approves(bank_copy, tmp_path):
    question = "When do branches close on Zephyr Day?"
    note = tmp_path / "zephyr.md"
    note.write_text("# Zephyr Day\n\nBranches close at 1:00 p.m. on Zephyr Day, 14 March.\n")
    settings = UploadSettings(limits=IngestLimits(max_entry_bytes=2 * MB))
    report = upload_documents(bank_copy, [note, docx_bomb(tmp_path / "bomb.docx", 8)], Uploader("alice", "s-a"),
                              settings)
    assert report.added == ["zephyr.md"] and "limit max_entry_bytes" in dict(report.rejected)["bomb.docx"]
    assert "for this session only" in upload_summary(report)
    events = {e["kind"]: e for e in bank_copy.audit.events()}
    assert (events["upload"]["user"], events["upload"]["session_id"]) == ("alice", "s-a")
    assert events["upload"]["detail"]["status"] == "private"
    assert "max_entry_bytes" in events["upload_refused"]["detail"]["reason"]

    search = bank_copy.searcher.search
    assert search(question, k=2, session="s-a")[0].source == "uploads/zephyr.md"
    assert all(h.source != "uploads/zephyr.md" for h in search(question, k=3, session="s-b"))
    [(label, upload_id)] = pending_choices(bank_copy)
    assert "uploads/zephyr.md" in label and "alice" in label
    assert review_uploads(bank_copy, [upload_id], "root", True, settings) == "Approved: `uploads/zephyr.md`"
    assert bank_copy.searcher.search(question, k=2)[0].source == "uploads/zephyr.md"
    approved = bank_copy.audit.events("upload_approved")
    assert [(e["user"], e["detail"]["uploaded_by"]) for e in approved] == [("root", "alice")]
    assert pending_choices(bank_copy) == []


def test_app_shows_the_approval_panel_only_when_admins_are_named(bank_bot):
    pool = AssistantPool(bank_bot.config)
    ids = {getattr(b, "elem_id", None) for b in build_demo(pool, UIConfig(admins=["root"])).blocks.values()}
    assert {"approval-panel", "approve-button", "reject-button", "upload-files"} <= ids
    plain = {getattr(b, "elem_id", None) for b in build_demo(pool, UIConfig()).blocks.values()}
    assert "approval-panel" not in plain


def test_the_pool_builds_other_packs_in_the_background_while_chats_go_on(bank_bot):
    """The UI warms the other packs after start-up (index, intent model); chats on a built pack are served
    during that build instead of waiting for it."""
    from dataclasses import replace

    pool = AssistantPool(replace(bank_bot.config, answer_mode="quote"))
    bank = pool.get("bank")
    thread = pool.warm(["hospital"])
    served_during_build = 0
    while thread.is_alive():
        assert pool.get("bank") is bank
        served_during_build += thread.is_alive()
    assert served_during_build > 0
    hospital = pool.get("hospital")
    assert hospital.pack.name == "hospital" and hospital.embedder is bank.embedder
    assert "Nurse Advice Line" in hospital.respond("what's the nurse advice line number?").answer


def test_a_bar_made_before_gradio_patches_tqdm_still_closes():
    """Gradio replaces tqdm's methods when the app starts; a bar that background work (the evidence warm-up)
    made just before used to raise AttributeError on close, which stopped the warm-up."""
    from gradio.helpers import patch_tqdm
    from tqdm import tqdm

    def made_before_the_patch():
        bar = tqdm.__new__(tqdm)
        getattr(tqdm, "__init__orig__", tqdm.__init__)(bar, total=3, disable=True)  # tqdm's own __init__
        return bar

    patch_tqdm()
    old = made_before_the_patch()
    with pytest.MonkeyPatch.context() as mp:  # without the app's class-level default: the old failure
        mp.delattr(tqdm, "_progress")
        with pytest.raises(AttributeError):
            old.close()
    old.close()
    bar = made_before_the_patch()
    bar.update()
    bar.close()  # with it (set when ui.app is imported): closes normally
    assert bar._progress is None


def test_hidden_progress_creates_no_bar(monkeypatch, embedder):
    """Work that shows no progress (the warm-up, background builds) creates no tqdm bar at all."""
    from tqdm import std

    from index.embed import Embedder
    from index.quiet import progress_bar

    def refuse(self, *args, **kwargs):
        raise AssertionError("a hidden progress bar was created")

    monkeypatch.setattr(std.tqdm, "__init__", refuse)
    vectors = Embedder(backend="onnx-int8").encode(["one sentence", "another one", "and a third"])
    assert vectors.shape[0] == 3
    assert list(progress_bar(range(3), show=False)) == [0, 1, 2]
