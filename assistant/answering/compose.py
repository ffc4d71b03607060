"""The answer a customer sees in evidence mode: verified generated sentences and quoted document sentences.

- `quote`: the evidence itself, "From *Debit cards › ATM fees*: "…" [1]", one line per source.
- `compose`: the verified sentences of the generated answer, each with its citation, then the quote;
  when none survives, the quote alone. The quote always stays: an earlier version dropped the quote of
  evidence that a verified sentence seemed to carry, and stated the expected fact less often than the
  quote alone (bank 71 % vs 74 %, hospital 54 % vs 55 % on the dev set: a paraphrase loses the document's
  exact words). That choice was made after seeing those dev-set totals, so dev is not blind to it.
"""

from __future__ import annotations

from assistant.answering.evidence import Evidence
from assistant.answering.verify import SentenceCheck


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
    """The final answer text and the status of each sentence in it (verified, quoted; restated and removed
    ones listed too). A restated sentence is left out of the text: the quote shows its evidence sentence."""
    verified = [c for c in checks if c.status == "verified"]
    removed = [c for c in checks if c.status != "verified"]
    if not verified:
        quoted = [SentenceCheck(e.text, "quoted", cites=(e.n,), support=e.score) for e in evidence]
        return quote(evidence), quoted + removed
    text = " ".join(_cited(c) for c in verified)
    quoted = [SentenceCheck(e.text, "quoted", cites=(e.n,), support=e.score) for e in evidence]
    return f"{text}\n\n{quote(evidence)}", list(verified) + quoted + removed


def _cited(check: SentenceCheck) -> str:
    marks = "".join(f"[{n}]" for n in check.cites)
    text = check.text.rstrip()
    if text and text[-1] in ".!?":
        return f"{text[:-1]} {marks}{text[-1]}"
    return f"{text} {marks}."
