"""Turn domain packs into training dialogues in the assistant's own prompt layout.

    python -m finetune make-data --domain bank hospital --out finetune/data/bank_hospital_dialogues.jsonl

Three kinds of dialogue, each with numbered passages in the system turn exactly as the assistant
builds them (assistant/prompt.py), so that fine-tuning teaches the behaviour the assistant needs:
- FAQ rows: the passage holding the answer among distractor passages (at a random position), and the
  FAQ's answer citing it, e.g. "... 021555013 [2].";
- document sections: a question made from the section's heading, answered from its first sentences;
- unanswerable: a question from another pack with this pack's passages, answered with the pack's
  fixed "no information" reply (the model learns not to answer from unrelated passages).
The packs' evaluation questions (eval/*.jsonl) are never used, not even where a FAQ row asks the same.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from assistant.packs import DomainPack, load_pack
from assistant.prompt import build_messages
from index.ingest import IngestError, iter_files, load_document
from index.search import Hit

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def _passages(pack: DomainPack) -> list[Hit]:
    """Every document section of the pack as a passage (FAQ files are used as rows instead)."""
    out = []
    for path in iter_files([pack.docs_dir]):
        if path.suffix.lower() in {".csv", ".xlsx"}:
            continue
        try:
            doc = load_document(path)
        except IngestError:
            continue
        for n, section in enumerate(doc.sections):
            text = " ".join(section.text.split())
            if len(text) < 80:
                continue
            out.append(Hit(chunk_id=f"{path.name}:{n}", source=path.name, title=doc.title, text=text[:900],
                           score=1.0, headings=list(section.headings)))
    return out


def _faq_rows(pack: DomainPack) -> list[tuple[str, str]]:
    rows = []
    for path in pack.docs_dir.glob("*.csv"):
        with path.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                q, a = (row.get("question") or "").strip(), (row.get("answer") or "").strip()
                if q and a:
                    rows.append((q, a))
    return rows


def eval_questions(packs: list[DomainPack]) -> set[str]:
    """Every question of the packs' evaluation sets (lower-cased), kept out of the training data."""
    out: set[str] = set()
    for pack in packs:
        for path in (pack.root / "eval").glob("*.jsonl"):
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    out |= {q.strip().lower() for q in [row.get("question", ""), *row.get("history", [])] if q}
    return out


def _first_sentences(text: str, n: int = 2) -> str:
    parts = _SENTENCE.split(text.strip())
    return " ".join(parts[:n]).strip()


def _dialogue(pack: DomainPack, question: str, answer: str, passages: list[Hit], kind: str) -> dict:
    messages = build_messages(pack.system_prompt, question, passages)
    messages.append({"role": "assistant", "content": answer})
    return {"kind": kind, "domain": pack.name, "messages": messages}


def pack_dialogues(pack: DomainPack, others: list[DomainPack], rng: np.random.Generator,
                   top_k: int = 2) -> list[dict]:
    held_out = eval_questions([pack, *others])
    passages = _passages(pack)
    if not passages:
        return []
    out = []

    def distractors(exclude: str, n: int) -> list[Hit]:
        pool = [p for p in passages if p.source != exclude]
        return [pool[i] for i in rng.choice(len(pool), size=min(n, len(pool)), replace=False)]

    for question, answer in _faq_rows(pack):
        if question.lower() in held_out:
            continue
        relevant = Hit(chunk_id="faq", source="faq.csv", title="FAQ", text=f"Q: {question} A: {answer}", score=1.0)
        shown = distractors("faq.csv", top_k - 1)
        slot = int(rng.integers(0, len(shown) + 1))
        shown.insert(slot, relevant)
        out.append(_dialogue(pack, question, f"{_first_sentences(answer, 2)} [{slot + 1}]", shown, "faq"))
    for passage in passages:
        heading = passage.headings[-1] if passage.headings else passage.title
        answer = _first_sentences(passage.text, 2)
        if not heading or len(answer) < 40:
            continue
        question = f"What can you tell me about {heading.strip().rstrip('?:.').lower()}?"
        shown = distractors(passage.source, top_k - 1)
        slot = int(rng.integers(0, len(shown) + 1))
        shown.insert(slot, passage)
        out.append(_dialogue(pack, question, f"{answer} [{slot + 1}]", shown, "section"))
    no_answer = pack.reply("no_answer")
    for other in others:
        for question, _ in [row for row in _faq_rows(other) if row[0].lower() not in held_out][:15]:
            out.append(_dialogue(pack, question, no_answer, distractors("", top_k), "unanswerable"))
    return out


def make_data(domains: list[str], out: str | Path, seed: int = 0) -> dict[str, int]:
    """Write the dialogues of every pack to `out` (JSONL, chat `messages`); returns counts per kind."""
    rng = np.random.default_rng(seed)
    packs = [load_pack(d) for d in domains]
    rows = []
    for pack in packs:
        rows += pack_dialogues(pack, [p for p in packs if p is not pack], rng)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["kind"]] = counts.get(r["kind"], 0) + 1
    return counts
