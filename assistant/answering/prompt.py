"""The grounded prompt: the pack's system prompt with numbered passages, recent turns, then the question.

The layout was chosen by trying variants on the bundled 135M model: passages inside the system
message, the bare question as the user turn and a one-sentence instruction gave the most faithful
answers; passages in the user turn, or a repetition penalty (which punishes copying figures from
the passages), made it invent amounts.
"""

from __future__ import annotations

from index.search import Hit

INSTRUCTION = "Answer in one or two short sentences using only the passages below, and cite them like [1]."


def format_passages(hits: list[Hit], max_chars: int = 900) -> str:
    blocks = []
    for n, hit in enumerate(hits, start=1):
        text = " ".join(hit.text.split())
        if len(text) > max_chars:
            text = text[:max_chars].rsplit(" ", 1)[0] + " ..."
        blocks.append(f"[{n}] {text}")
    return "\n".join(blocks)


def build_messages(system_prompt: str, question: str, hits: list[Hit],
                   history: list[tuple[str, str]] | None = None, history_turns: int = 2) -> list[dict]:
    """Chat messages for the LLM: passages in the system turn, so earlier turns cannot crowd them out."""
    system = f"{system_prompt.strip()}\n{INSTRUCTION}\n\nPassages:\n{format_passages(hits)}"
    messages = [{"role": "system", "content": system}]
    for user, bot in (history or [])[-history_turns:]:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": bot}]
    messages.append({"role": "user", "content": question})
    return messages


EVIDENCE_INSTRUCTION = ("Answer the question in one or two short sentences using only the facts below. "
                        "Copy amounts, times and phone numbers exactly as written. Cite facts like [1].")


def build_evidence_messages(system_prompt: str, question: str, evidence: list[tuple[int, str, str]]) -> list[dict]:
    """Chat messages for an answer written from selected evidence only: (passage number, section, sentence)."""
    facts = "\n".join(f"[{n}] {section + ': ' if section else ''}{text}" for n, section, text in evidence)
    system = f"{system_prompt.strip()}\n{EVIDENCE_INSTRUCTION}\n\nFacts:\n{facts}"
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]
