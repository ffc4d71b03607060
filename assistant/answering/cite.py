"""Citations: keep the model's valid [n] markers and attribute uncited sentences to the passage they came from.

Small models often drop or invent citation numbers. Each answer sentence without a valid marker is
matched to the passage that holds most of its content words; it gets that passage's number only when
most of its content words are really there, so a citation always points at supporting text.
"""

from __future__ import annotations

import re

_MARKER = re.compile(r"\s*\[(\d{1,2})\]")
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|\n+")
# "9:00 a.m. to 5:00 p.m. ET" is one sentence: these never end one.
_ABBREVIATIONS = ("a.m.", "p.m.", "e.g.", "i.e.", "etc.", "dr.", "st.", "mr.", "mrs.", "ms.", "no.", "u.s.", "vs.")


def sentences(text: str) -> list[str]:
    """Split into sentences, keeping abbreviations such as "p.m." and list lines intact."""
    out: list[str] = []
    for piece in _SENTENCE.split(text.strip()):
        piece = piece.strip()
        if not piece:
            continue
        if out and out[-1].lower().endswith(_ABBREVIATIONS) and not piece[:1].isupper():
            out[-1] = f"{out[-1]} {piece}"
        elif (out and out[-1][-4:].lower() in ("a.m.", "p.m.")
              and not re.match(r"(?:The|This|That|These|Those|It|You|We|Our|Your|If|For|To|In|On|At|A|An)\b",
                               piece)):  # "5:00 p.m. ET" goes on; "5:00 p.m. The next ..." is a new sentence
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out
_WORD = re.compile(r"[\w$%.,:/-]+", re.UNICODE)
_STOP = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those you your we our they their he she his her i me my can could will would should may might must do "
    "does did not no yes so than then there here what which who whom when where why how all any each some such "
    "also only very just about into over under up down out more most other per please".split()
)


def content_words(text: str) -> set[str]:
    words = {w.strip(".,:").lower() for w in _WORD.findall(text)}
    return {w for w in words if w and w not in _STOP and (len(w) > 2 or any(c.isdigit() for c in w))}


def support(sentence: str, passage: str) -> float:
    """Share of the sentence's content words found in the passage (0..1)."""
    words = content_words(_MARKER.sub("", sentence))
    if not words:
        return 0.0
    return len(words & content_words(passage)) / len(words)


def attribute(answer: str, passages: list[str], min_support: float = 0.6) -> tuple[str, list[int]]:
    """Return the answer with valid citations and the sorted passage numbers it cites (1-based)."""
    cited: set[int] = set()
    out = []
    seen: set[str] = set()
    for sentence in sentences(answer):
        key = _MARKER.sub("", sentence).strip().lower()
        if key in seen:  # small models loop: drop verbatim repeats
            continue
        seen.add(key)
        numbers = [int(n) for n in _MARKER.findall(sentence)]
        valid = [n for n in numbers if 1 <= n <= len(passages)]
        bare = _MARKER.sub("", sentence).rstrip()
        if not valid and passages and len(content_words(bare)) >= 2:
            scores = [support(bare, p) for p in passages]
            best = max(range(len(passages)), key=scores.__getitem__)
            if scores[best] >= min_support:
                valid = [best + 1]
        valid = sorted(set(valid))
        cited.update(valid)
        if valid:
            marks = "".join(f"[{n}]" for n in valid)
            # markers go before the closing punctuation: "costs $25 [1]."
            if bare and bare[-1] in ".!?。！？":
                out.append(f"{bare[:-1]} {marks}{bare[-1]}")
            else:
                out.append(f"{bare} {marks}")
        else:
            out.append(bare)
    return " ".join(s for s in out if s), sorted(cited)
