"""The answer a customer sees in evidence mode: verified generated sentences and quoted document sentences.

- `quote`: the evidence itself, "From *Debit cards › ATM fees*: "…" [1]", one line per source.
- `compose`: the verified sentences of the generated answer, each with its citation; when none
  survives, the quote. Every evidence sentence is either carried by a verified sentence (cited by it,
  with all of its figures stated) or quoted after the answer, so no evidence the customer needs is
  dropped by a paraphrase that left it out.
"""

from __future__ import annotations

from assistant.evidence import Evidence
from assistant.grounding import _figures
from assistant.verify import SentenceCheck


def quote(evidence: list[Evidence]) -> str:
    """The evidence as quoted document sentences, grouped by passage, in ranking order."""
    groups: dict[int, list[Evidence]] = {}
    for item in evidence:
        groups.setdefault(item.n, []).append(item)
    lines = []
    for n, items in groups.items():
        where = " › ".join(dict.fromkeys([items[0].title, *[s for s in items[0].section.split(" › ") if s]]))
        body = " … ".join(_sentence(i.text) for i in items)
        lines.append(f"From *{where}*: \u201c{body}\u201d [{n}]")
    return "\n\n".join(lines)


def _sentence(text: str) -> str:
    text = text.strip().rstrip(";,")
    return text if text[-1:] in ".!?:" else f"{text}."


def compose(checks: list[SentenceCheck], evidence: list[Evidence]) -> tuple[str, list[SentenceCheck]]:
    """The final answer text and the status of each sentence in it (verified, quoted; removed ones listed too)."""
    verified = [c for c in checks if c.status == "verified"]
    removed = [c for c in checks if c.status != "verified"]
    if not verified:
        quoted = [SentenceCheck(e.text, "quoted", cites=(e.n,), support=e.score) for e in evidence]
        return quote(evidence), quoted + removed
    text = " ".join(_cited(c) for c in verified)
    cited = {n for c in verified for n in c.cites}
    said = _figures(text)
    # every evidence sentence is either carried by a verified sentence (cited, its figures all stated) or quoted
    rest = [e for e in evidence if e.n not in cited or not _figures(e.text) <= said]
    statuses = list(verified) + [SentenceCheck(e.text, "quoted", cites=(e.n,), support=e.score) for e in rest]
    parts = [text] + ([quote(rest)] if rest else [])
    return "\n\n".join(parts), statuses + removed


def _cited(check: SentenceCheck) -> str:
    marks = "".join(f"[{n}]" for n in check.cites)
    text = check.text.rstrip()
    if text and text[-1] in ".!?":
        return f"{text[:-1]} {marks}{text[-1]}"
    return f"{text} {marks}."
