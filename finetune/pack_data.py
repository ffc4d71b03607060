"""Turn domain packs into training dialogues in the assistant's own prompt layouts.

    python -m finetune make-data --domain bank hospital --out finetune/data/bank_hospital_dialogues.jsonl
    python -m finetune make-data --format evidence --out finetune/data/evidence_dialogues.jsonl

`--format prompt` (the default) writes three kinds of dialogue, each with numbered passages in the system
turn exactly as the generative answer mode builds them (assistant/answering/prompt.py `build_messages`):
- FAQ rows: the passage holding the answer among distractor passages (at a random position), and the
  FAQ's answer citing it, e.g. "... 021555013 [2].";
- document sections: a question made from the section's heading, answered from its first sentences;
- unanswerable: a question from another pack with this pack's passages, answered with the pack's
  fixed "no information" reply (the model learns not to answer from unrelated passages).

`--format evidence` writes the evidence answer mode's dialogues (`build_evidence_messages`): the question,
the document sentences the real EvidenceSelector picks for it from the pack's real index (numbered as
the assistant numbers its sources), and a one- or two-sentence answer made of the evidence sentences that
hold the answer, cited, with every figure copied (the sentences as the documents word them; an
introduction ending in a colon joined with the list item that completes it). A dialogue is kept only when
the selector does not flag its evidence (the assistant asks the LLM nothing then), its target answers the
question (its sentences come from the FAQ row or the section the question was made from) and the real
verifier (assistant/answering/verify.py) accepts every target sentence against that evidence. Questions are the
FAQ rows' own questions (as written, and lower-cased without the question mark, as customers type) and
the sections' headings turned into questions.

The packs' question sets (eval/, fit/ and dev/) are never used, not even where a FAQ row asks the same.
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from assistant.answering.cite import _MARKER
from assistant.answering.evidence import Evidence, EvidenceSelector, units
from assistant.answering.prompt import build_evidence_messages, build_messages
from assistant.answering.verify import Verifier
from assistant.config import AssistantConfig
from assistant.packs import DomainPack, load_pack
from index.embed import Embedder, resolve_embedder
from index.errors import SettingError
from index.ingest import IngestError, iter_files, load_document
from index.search import Hit, Searcher
from index.store import IndexStore

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
HELD_OUT_SPLITS = ("eval", "fit", "dev")  # the packs' question sets: measured on, never trained on


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


def question_key(text: str) -> str:
    """A question compared with the held-out sets: lower-cased, spaces collapsed, no end punctuation."""
    return " ".join(text.lower().split()).rstrip(" ?.!")


def held_out_questions(packs: list[DomainPack]) -> set[str]:
    """Every question and message of the packs' eval/, fit/ and dev/ sets (as `question_key`s), kept out of
    training."""
    out: set[str] = set()
    for pack in packs:
        for split in HELD_OUT_SPLITS:
            for path in sorted((pack.root / split).glob("*.jsonl")):
                for line in path.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        row = json.loads(line)
                        asked = [row.get("question", ""), row.get("text", ""), *row.get("history", [])]
                        out |= {question_key(q) for q in asked if q}
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
    held_out = held_out_questions([pack, *others])
    passages = _passages(pack)
    if not passages:
        return []
    out = []

    def distractors(exclude: str, n: int) -> list[Hit]:
        pool = [p for p in passages if p.source != exclude]
        return [pool[i] for i in rng.choice(len(pool), size=min(n, len(pool)), replace=False)]

    for question, answer in _faq_rows(pack):
        if question_key(question) in held_out:
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
        for question, _ in [row for row in _faq_rows(other) if question_key(row[0]) not in held_out][:15]:
            out.append(_dialogue(pack, question, no_answer, distractors("", top_k), "unanswerable"))
    return out


class RuntimeEvidence:
    """A pack's evidence step as the assistant runs it (assistant/pipeline.py): the evidence pool from the pack's
    index, the selector's assessment, the sources renumbered, the prompt, and the verifier."""

    def __init__(self, pack: DomainPack, searcher: Searcher, selector: EvidenceSelector, verifier: Verifier,
                 config: AssistantConfig | None = None):
        self.pack, self.searcher, self.selector, self.verifier = pack, searcher, selector, verifier
        self.config = config or AssistantConfig()  # the pool settings the assistant runs with

    @classmethod
    def build(cls, pack: DomainPack, embedder: Embedder, index_dir: Path) -> RuntimeEvidence:
        """The assistant's parts for `pack` over an index of its documents in `index_dir` (built when missing),
        with every sentence embedded up front in the same batches as the assistant's start-up, so that near-tied
        sentences rank as they do in a running assistant."""
        # the assistant's own index build and chunking (imported here: the pipeline module is large)
        from assistant.pipeline import ensure_index

        ensure_index(pack, embedder, index_dir)
        searcher = Searcher(IndexStore.open(index_dir, embedder=embedder.name), embedder)
        runtime = cls(pack, searcher, EvidenceSelector.for_store(searcher.store, embedder), Verifier(embedder))
        store = searcher.store
        rows = list(range(len(store)))
        for start in range(0, len(rows), 256):  # as Assistant._warm_evidence
            records = store.chunks(rows[start:start + 256])
            runtime.selector.warm([Hit(chunk_id=r["chunk_id"], source=r["source"], title=r["title"], text=r["text"],
                                       score=0.0, headings=r["headings"]) for r in records.values()])
        return runtime

    def select(self, question: str) -> tuple[list[Evidence], list[Hit], bool]:
        """(evidence numbered as the answer's sources, the passages it came from in that order, flagged: the
        assistant quotes flagged evidence as "the closest the documents come" and asks the LLM nothing)."""
        c = self.config
        pool = self.searcher.search_many([question], k=c.pool_k, min_score=c.pool_min_score, mode=c.search_mode)[0]
        if not pool:
            return [], [], False
        found = self.selector.assess(question, pool)
        order = list(dict.fromkeys(e.n for e in found.evidence))  # as Assistant._answer_evidence numbers sources
        number = {old: new for new, old in enumerate(order, start=1)}
        return [replace(e, n=number[e.n]) for e in found.evidence], [pool[old - 1] for old in order], found.flagged

    def messages(self, question: str, evidence: list[Evidence]) -> list[dict]:
        return build_evidence_messages(self.pack.system_prompt, question,
                                       [(e.n, e.section or e.title, e.text) for e in evidence])

    def verified(self, answer: str, question: str, evidence: list[Evidence]) -> bool:
        checks = self.verifier.check(answer, question, [(e.n, e.text) for e in evidence])
        # "restated": verified, and only repeating one evidence sentence (the answer then shows the quote alone)
        return bool(checks) and all(c.status in ("verified", "restated") for c in checks)


_ASKING = re.compile(r"(?i)^(?:how|what|who|when|where|which|why|can|do|does|is|are|will|should)\b")
_IMPERATIVE = re.compile(r"(?i)^(?:update|protect|plan|raise|test|keep|bring|call|check|choose|use|pay|make|"
                         r"avoid|tell|ask|give|get|find|freeze|report|stop|review|contact|request)\b")
_TOPIC_TEMPLATES = ("What can you tell me about {topic}?", "What should I know about {topic}?",
                    "Can you explain {topic}?")
_TO_ASKER = {"your": "my", "yours": "mine", "yourself": "myself", "you": "I"}
TARGET_MAX_TOKENS = 64  # the answer must end within the assistant's 80-token budget (EVIDENCE_MAX_TOKENS)


def _lower_first(text: str) -> str:
    """"Sign language interpreters" -> "sign language interpreters"; names ("Premier Checking") keep their case."""
    words = text.split()
    if words and not any(w[:1].isupper() for w in words[1:]) and not words[0].isupper():
        return text[:1].lower() + text[1:]
    return text


def heading_questions(title: str, headings: list[str], n: int) -> list[str]:
    """A section's heading as a customer's questions (two phrasings where a template makes them), with the
    document's (or the parent section's) topic when the heading alone says too little; `n` rotates the
    templates so that every phrasing is used."""
    parent = headings[-2] if len(headings) >= 2 else title
    context = _lower_first(re.split(r":| - ", parent)[0].strip())
    heading = re.sub(r"^\d{1,2}\.\s+", "", " ".join((headings[-1] if headings else title).split()))
    if heading.endswith("?"):
        return [heading if len(heading.split()) >= 4 else f"{context}: {_lower_first(heading)}"]
    topic = re.sub(r"\s*\([^)]*\)", "", heading.split(":")[0]).strip().rstrip(".")
    if _ASKING.match(topic):
        return [f"{context[:1].upper() + context[1:]}: {topic.lower()}?"]
    asker = _lower_first(" ".join(_TO_ASKER.get(w.lower(), w) for w in topic.split()))
    if _IMPERATIVE.match(topic):
        return [f"How do I {asker}?"]
    if re.match(r"(?i)if\b", topic):
        return [f"What should I do {asker}?"]
    topic = _lower_first(topic)
    if len(topic.split()) <= 2 and heading != title and not set(topic.lower().split()) & set(context.lower().split()):
        topic = f"{topic} for {context.lower()}"
    return [_TOPIC_TEMPLATES[(n + i) % len(_TOPIC_TEMPLATES)].format(topic=topic) for i in range(2)]


def _cited(text: str, n: int) -> str:
    text = _MARKER.sub("", text).strip().rstrip(";,")
    text = text[:1].upper() + text[1:]
    end = text[-1] if text[-1:] in ".!?" else "."
    return f"{text.rstrip('.!?')} [{n}]{end}"


def _is_table_row(text: str) -> bool:
    return text.count(": ") >= 2  # "Wire type: Fee: Cut-off time" (a row of three cells or more)


def _restated(intro: Evidence, item: Evidence) -> str:
    """"Our routing number is:" + "021555013 ..." -> one sentence saying both."""
    body = item.text.strip()
    return f"{intro.text.rstrip().rstrip(':')} {body[:1].lower() + body[1:] if not body[:2].isupper() else body}"


def candidate_targets(evidence: list[Evidence], answers: list[Evidence], passages: list[Hit]) -> list[str]:
    """Target answers built from the evidence sentences that hold the answer, most restated first: an
    introduction ending in a colon joined with the list item that completes it, then one or two answering
    sentences as written (each cited; two from one passage in the document's order, so that "It is waived
    if ..." follows the fee it speaks of), then the best one alone."""
    out: list[str] = []
    usable = [e for e in answers if not _is_table_row(e.text) and not e.text.rstrip().endswith(":")]
    for intro in (e for e in answers if e.text.rstrip().endswith(":")):
        following = units(passages[intro.n - 1].text)
        at = following.index(intro.text) if intro.text in following else -1
        item = next((e for e in evidence if 0 <= at < len(following) - 1 and e.text == following[at + 1]), None)
        if item is not None:
            out.append(_cited(_restated(intro, item), intro.n))
    if len(usable) >= 2:
        pair = usable[:2]
        if pair[0].n == pair[1].n:
            order = units(passages[pair[0].n - 1].text)
            pair.sort(key=lambda e: order.index(e.text) if e.text in order else len(order))
        out.append(" ".join(_cited(e.text, e.n) for e in pair))
    if usable:
        out.append(_cited(usable[0].text, usable[0].n))
    return [t for t in dict.fromkeys(out) if _tokens_about(t) <= TARGET_MAX_TOKENS]


def _tokens_about(text: str) -> float:
    """The bundled model's token count, within about 5 (its tokenizer gives every digit a token of its own
    and an ordinary word about a token per 4 characters), without loading the model."""
    digits = sum(ch.isdigit() for ch in text)
    return digits + (len(text) - digits) / 4.2


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def evidence_dialogues(pack: DomainPack, others: list[DomainPack], runtime: RuntimeEvidence,
                       per_origin: int | None = None) -> tuple[list[dict], dict]:
    """The pack's evidence-mode dialogues (at most `per_origin` of each origin: faq, faq-casual, heading), and
    counts of the questions asked and of why the rest were dropped."""
    held_out = held_out_questions([pack, *others])
    asks: list[tuple[str, str, object]] = []  # (origin, question, what answers it)
    for path in sorted(pack.docs_dir.glob("*.csv")):
        with path.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                q, a = (row.get("question") or "").strip(), (row.get("answer") or "").strip()
                if q and a:
                    asks += [("faq", q, (path.name, a)), ("faq-casual", q.lower().rstrip(" ?"), (path.name, a))]
    for n, section in enumerate(_passages(pack)):
        if section.headings:
            asks += [("heading", q, section) for q in heading_questions(section.title, section.headings, n)]
    out: list[dict] = []
    tally = {"asked": 0, "held out": 0, "no evidence": 0, "flagged": 0, "answer not in evidence": 0, "not verified": 0}
    seen: set[str] = set()
    made: dict[str, int] = {}
    for origin, question, answer in asks:
        if per_origin is not None and made.get(origin, 0) >= per_origin:
            continue
        if question_key(question) in held_out:
            tally["held out"] += 1
            continue
        if question in seen:
            continue
        seen.add(question)
        tally["asked"] += 1
        evidence, passages, flagged = runtime.select(question)
        if not evidence or flagged:
            tally["flagged" if evidence else "no evidence"] += 1
            continue
        if isinstance(answer, Hit):
            section = " › ".join(answer.headings)
            answers = [e for e in evidence if e.source == answer.source and e.section == section]
        else:
            source, text = answer
            answers = [e for e in evidence if e.source == source and _norm(e.text) in _norm(text)]
        targets = candidate_targets(evidence, answers, passages)
        if not targets:
            tally["answer not in evidence"] += 1
            continue
        target = next((t for t in targets if runtime.verified(t, question, evidence)), None)
        if target is None:
            tally["not verified"] += 1
            continue
        messages = runtime.messages(question, evidence) + [{"role": "assistant", "content": target}]
        made[origin] = made.get(origin, 0) + 1
        out.append({"kind": "evidence", "origin": origin, "domain": pack.name, "messages": messages,
                    "evidence": [[e.n, e.section or e.title, e.text] for e in evidence]})
    return out, tally


def make_evidence_data(domains: list[str], embedder: Embedder | None = None,
                       index_root: str | Path | None = None) -> tuple[list[dict], dict[str, dict]]:
    """Evidence dialogues of every pack, each pack searched in an index of its own documents only (built
    under `index_root`, a temporary folder by default, so that a user's uploads never reach training data)."""
    packs = [load_pack(d) for d in domains]
    embedder = embedder or resolve_embedder("bundled")
    rows: list[dict] = []
    tallies: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ra-evidence-data-") as tmp:
        root = Path(index_root) if index_root else Path(tmp)
        for pack in packs:
            runtime = RuntimeEvidence.build(pack, embedder, root / pack.name)
            dialogues, tallies[pack.name] = evidence_dialogues(pack, [p for p in packs if p is not pack], runtime)
            rows += dialogues
    return rows, tallies


def make_data(domains: list[str], out: str | Path, seed: int = 0, fmt: str = "prompt") -> dict[str, int]:
    """Write the dialogues of every pack to `out` (JSONL, chat `messages`); returns counts per kind
    (`fmt="evidence"`: per pack and origin, and why questions were dropped)."""
    counts: dict[str, int] = {}
    if fmt == "evidence":
        rows, tallies = make_evidence_data(domains)
        for r in rows:
            key = f"{r['domain']}/{r['origin']}"
            counts[key] = counts.get(key, 0) + 1
        for name, tally in tallies.items():
            counts.update({f"{name} {reason}": value for reason, value in tally.items()})
    elif fmt == "prompt":
        rng = np.random.default_rng(seed)
        packs = [load_pack(d) for d in domains]
        rows = []
        for pack in packs:
            rows += pack_dialogues(pack, [p for p in packs if p is not pack], rng)
        for r in rows:
            counts[r["kind"]] = counts.get(r["kind"], 0) + 1
    else:
        raise SettingError(f"--format must be prompt or evidence (got {fmt!r})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return counts
