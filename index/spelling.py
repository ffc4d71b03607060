"""Spelling correction of queries against the index's own words.

Customers type "deibt card", "visiitng houurs", "whats the ruting numbr". A misspelled word matches
nothing in BM25 and pulls the query's embedding off topic: on the packs' customer-phrased questions two
typos per question cost 15-20 points of answers that state the fact. The corrector changes only a word
that is neither an English word (the 160,000-word frequency list that ships with pyspellchecker) nor a
word of the indexed documents, and only to a word one edit away (a letter added, dropped, changed, or two
neighbours swapped):

- a word of the documents first (the most frequent of them), since that is what the query must meet;
- else an English word (the most frequent), which at least gives the embedder a real word.

A word of 4 letters is changed only when exactly one word of the documents is one edit away ("mney" ->
"money"; "hous" could be "hours" or "house" and is kept). Kept as written: shorter words, words with
digits, acronyms in capitals, a plural or possessive typed without its apostrophe ("moms", "brigids")
whose stem is known, the clipped start of a longer word ("intro", "surg"), a hyphenated word of the
documents typed as one ("xrays"), contractions typed without the apostrophe ("dont") and chat words
("hola"), and real words used by mistake ("debut card"), which need context a word list does not have.
A capitalised word no document holds is taken as a name ("Zelle", "Humana"), never made an English word;
in a message typed all in capitals, words are read as lower case (neither acronyms nor names) and made
only the documents' words, since a name cannot be told there ("CAN I USE ZELLE" stays).
Common chat shorthand ("appt", "tmrw", "acct") is written out, and two words of the documents typed as
one are split ("debitcard" -> "debit card").
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")  # words, accented ones whole ("Schönlein")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
MIN_LENGTH = 5
SHORT_LENGTH = 4
COMMON_COUNT = 10_000  # an English word this frequent in the list counts as common
MIN_ENGLISH_COUNT = 100  # half the list's words sit at its floor of 50: rare names and oddities, not targets
_ENDINGS = ("s", "es", "d", "ed", "er", "ers", "ing", "ly")
_DROP_E = ("ed", "er", "ers", "ing")  # endings that drop a word's final e ("schedule" + "ing")

# Chat shorthand, written out so that search meets the documents' words.
SHORTHAND = {
    "acct": "account", "accts": "accounts", "appt": "appointment", "appts": "appointments",
    "tmrw": "tomorrow", "tmrow": "tomorrow", "tmr": "tomorrow", "pls": "please", "plz": "please",
    "thx": "thanks", "hrs": "hours", "mins": "minutes", "yrs": "years", "wk": "week", "wks": "weeks",
    "ppl": "people", "msg": "message", "dept": "department", "govt": "government", "rx": "prescription",
    "wknd": "weekend", "ur": "your", "wat": "what", "abt": "about", "bc": "because", "cuz": "because",
    "nite": "night", "tonite": "tonight", "bday": "birthday", "yr": "year", "mo": "month",
}
# Contractions typed without the apostrophe and chat words the word list lacks: kept as written (the
# embedder reads them; "dont" is not "done", "hola" is not "hold").
CONTRACTIONS = frozenset(
    "dont doesnt didnt isnt arent wasnt werent havent hasnt hadnt couldnt shouldnt wouldnt mustnt youre "
    "theyre thats whats theres heres youve theyve weve youll theyll yall "
    "hola haha hehe lmao bruh".split())


@lru_cache(maxsize=1)
def english_words() -> dict[str, int]:
    """The English frequency list that ships with pyspellchecker (word -> count); empty when it is missing."""
    spec = find_spec("spellchecker")
    if spec is None or not spec.submodule_search_locations:
        log.warning("pyspellchecker is not installed: queries are searched without spelling correction "
                    "(pip install pyspellchecker)")
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "en.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return {w: int(n) for w, n in json.load(f).items() if w.isalpha()}


_HYPHENATED = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)+")


def word_counts(texts: Iterable[str]) -> Counter:
    """How often each word (lower-cased, letters only) occurs in `texts`; a hyphenated word also counts
    written as one ("X-rays" as "xrays", "Wi-Fi" as "wifi"), as customers type it."""
    words: Counter = Counter()
    for text in texts:
        words.update(t.lower() for t in _TOKEN.findall(text) if t.isalpha())
        words.update(t.replace("-", "").lower() for t in _HYPHENATED.findall(text))
    return words


def _prefixes(words: Iterable[str]) -> frozenset[str]:
    """Starts of at least SHORT_LENGTH letters that leave 3 or more letters of the word out."""
    return frozenset(w[:n] for w in words for n in range(SHORT_LENGTH, len(w) - 2))


@lru_cache(maxsize=1)
def _common_prefixes() -> frozenset[str]:
    return _prefixes(w for w, n in english_words().items() if n >= COMMON_COUNT)


def _edits1(word: str) -> set[str]:
    """Every string one edit from `word` (Norvig): a letter dropped, swapped with the next, changed, added."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = [a + b[1:] for a, b in splits if b]
    swaps = [a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1]
    changes = [a + c + b[1:] for a, b in splits if b for c in _LETTERS]
    inserts = [a + c + b for a, b in splits for c in _LETTERS]
    return set(deletes + swaps + changes + inserts)


def _case_like(word: str, model: str) -> str:
    if model[:1].isupper() and model[1:].islower():
        return word[:1].upper() + word[1:]
    if model.isupper():
        return word.upper()
    return word


def shouting(text: str) -> bool:
    """A message typed in capitals ("WHATS THE FEE FOR A WIRE TRANSFR"): at least three words, no lower-case
    letter. Its words are read as lower case: neither acronyms nor names."""
    return not any(c.islower() for c in text) and len(_TOKEN.findall(text)) >= 3


class Speller:
    """Correct a query's misspelled words to the indexed documents' words (see the module docstring)."""

    def __init__(self, words: dict[str, int], english: dict[str, int] | None = None, to_english: bool = True):
        self.words = {w: n for w, n in words.items() if w.isalpha()}
        self.to_english = to_english
        self._prefixes: frozenset[str] | None = None
        self.english = english_words() if english is None else english
        self._cache: dict[tuple[str, frozenset[str]], str] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.english) and bool(self.words)

    def _inflected(self, low: str) -> bool:
        """A known word with an ending: "moms", "texted", "preapproved", "scheduling" (typed as meant)."""
        for ending in _ENDINGS:
            stem = low[: -len(ending)]
            if low.endswith(ending) and len(stem) >= (3 if ending in ("s", "es") else 4) and (
                    self.known(stem) or (ending in _DROP_E and self.known(stem + "e"))):
                return True
        return False

    def _clipped(self, low: str) -> bool:
        """The start of a longer word of the documents or a common English one: "intro", "approx", "rehab"."""
        if self._prefixes is None:
            self._prefixes = _prefixes(tuple(self.words))
        return low in self._prefixes or low in _common_prefixes()

    def known(self, word: str) -> bool:
        """A word of the documents or of English (lower case)."""
        return word in self.words or word in self.english

    def correct(self, text: str, keep: frozenset[str] = frozenset()) -> str:
        """`text` with misspelled words replaced; unchanged when nothing needs it (or correction is off). `keep`:
        words (lower case) left as typed whatever the documents hold, such as the everyday words of a pack's
        glossary ("echeck", "Zelle", "Venmo": the documents lack them by design)."""
        if not self.enabled or not text:
            return text
        cached = self._cache.get((text, keep))
        if cached is None:
            loud = shouting(text)
            cached = _TOKEN.sub(lambda m: m.group() if m.group().lower() in keep else self.word(m.group(), loud), text)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[(text, keep)] = cached
        return cached

    def corrections(self, text: str, keep: frozenset[str] = frozenset()) -> dict[str, str]:
        """{written word: what `correct` makes of it} for the words it changes."""
        if not self.enabled:
            return {}
        loud = shouting(text)
        return {w: c for w in _TOKEN.findall(text) if w.lower() not in keep and (c := self.word(w, loud)) != w}

    def word(self, word: str, loud: bool = False, english: bool = True) -> str:
        """One word as `correct` writes it. `loud`: the message is typed in capitals (see `shouting`), so a
        name cannot be told from other words: only the documents' words are offered, never other English."""
        if loud:
            return _case_like(self.word(word.lower(), english=False), word)
        low = word.lower()
        if low in SHORTHAND and low not in self.words:
            return _case_like(SHORTHAND[low], word)
        if (len(word) < SHORT_LENGTH or not word.isalpha() or not word.isascii() or (word.isupper() and len(word) > 1)
                or low in CONTRACTIONS or self.known(low) or self._inflected(low) or self._clipped(low)):
            return word
        candidates = _edits1(low)
        if len(low) < MIN_LENGTH:  # a short word: only to the one word of the documents it can be
            found = [c for c in candidates if c in self.words and len(c) >= SHORT_LENGTH]
            return _case_like(found[0], word) if len(found) == 1 else word
        found = [c for c in candidates if c in self.words]
        if found:
            return _case_like(max(found, key=lambda c: (self.words[c], c)), word)
        if split := self._split(low):
            return _case_like(split, word)
        if word[:1].isupper():  # "Zelle", "Humana": a name the documents lack, not "Belle" or "human"
            return word
        found = ([c for c in candidates if self.english.get(c, 0) >= MIN_ENGLISH_COUNT]
                 if self.to_english and english else [])
        if found:
            return _case_like(max(found, key=lambda c: (self.english[c], c)), word)
        return word

    def _split(self, low: str) -> str | None:
        """Two words of the documents typed as one ("debitcard" -> "debit card"), each of 4+ letters; the
        split whose rarer half is most frequent."""
        splits = [(low[:i], low[i:]) for i in range(SHORT_LENGTH, len(low) - SHORT_LENGTH + 1)
                  if low[:i] in self.words and low[i:] in self.words]
        if not splits:
            return None
        left, right = max(splits, key=lambda p: (min(self.words[p[0]], self.words[p[1]]), p))
        return f"{left} {right}"
