"""The pack's glossary: the everyday words customers use for the institution's own terms.

A customer asks about "the childrens floor" or "the ABA number"; the documents say *Pediatrics* and *routing
number*. `glossary.csv` in a pack (header `term,also`: the term as the documents write it, then the everyday
words for it separated by `|`) lets the search and the evidence selection meet both: a message that uses an
everyday word and not the term is searched with the term added ("... on the childrens floor (pediatrics)").

    term,also
    pediatrics,children's|childrens|kids floor
    routing number,aba number|aba
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from index.errors import SettingError

MAX_ROWS = 5_000
MAX_CELL = 2_000  # characters in one cell: a longer one is a broken file (a stray quote), not a glossary row
_DASHES = str.maketrans({c: " " for c in "-\u2010\u2011\u2012\u2013\u2014"})
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})


def _clean(text: str) -> str:
    """Lower case, one form of each letter (NFC) and of each quote, one space between words."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().translate(_QUOTES).split())


def _normal(text: str) -> str:
    """`_clean`, with hyphens and dashes read as spaces: "cut-off time" and "cut off time" are one phrase."""
    return " ".join(_clean(text).translate(_DASHES).split())


def _words(text: str) -> list[str]:
    # "$112" and "999.00" are amounts, not the emergency numbers 112 and 999
    return re.findall(r"\$?[^\W_]+(?:['.,&#+][^\W_]+)*|[&#+]", text)


def _key(word: str) -> str:
    """A word without its possessive or plural ending: "atm's", "atms" and "atm" are one word."""
    word = word.removesuffix("'s").removesuffix("'")
    if len(word) > 3 and word.endswith("es") and word[-3] in "sxz":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _phrase(text: str) -> tuple[str, ...]:
    return tuple(_key(w) for w in _words(_normal(text)))


@dataclass(frozen=True)
class Glossary:
    """Institution terms with the everyday words for each (empty: no pack glossary)."""

    entries: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        by_first: dict[str, list[tuple[tuple[str, ...], int, bool]]] = {}
        for n, entry in enumerate(self.entries):
            if (not isinstance(entry, tuple) or len(entry) != 2 or not isinstance(entry[0], str)
                    or not isinstance(entry[1], tuple) or not all(isinstance(a, str) for a in entry[1])):
                raise SettingError(f"glossary entry {n + 1}: expected (term, (everyday word, ...)), got {entry!r}")
            term, also = entry
            for text, is_term in ((term, True), *((a, False) for a in also)):
                words = _phrase(text)
                if words:
                    by_first.setdefault(words[0], []).append((words, n, is_term))
        for candidates in by_first.values():
            candidates.sort(key=lambda c: -len(c[0]))  # the longest phrase first
        object.__setattr__(self, "_by_first", by_first)

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def read(cls, path: str | Path) -> Glossary:
        """The glossary in a `term,also` CSV file; a missing file is an empty glossary. A malformed one is an
        error naming the line to fix (nothing is half-loaded)."""
        path = Path(path)
        if not path.exists():
            return cls()
        if not path.is_file():
            raise SettingError(f"{path}: not a file; the glossary is a CSV file with the header `term,also`")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SettingError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc
        except OSError as exc:
            raise SettingError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, where: str = "glossary") -> Glossary:
        text = text.removeprefix("\ufeff")
        reader = csv.reader(io.StringIO(text), strict=True)
        entries: list[tuple[str, tuple[str, ...]]] = []
        header = None
        read = 0  # lines read before the row being read
        try:
            for row in reader:
                line, read = read + 1, reader.line_num  # the line where this row starts
                while row and not row[-1].strip():  # a spreadsheet's trailing empty cells
                    row = row[:-1]
                if header is None:
                    header = [c.strip().lower() for c in row]
                    if header != ["term", "also"]:
                        raise SettingError(f"{where}: the first line must be the header `term,also`")
                    continue
                if not row:
                    continue
                if any("\n" in c or "\r" in c or len(c) > MAX_CELL for c in row):
                    raise SettingError(f"{where}, line {line}: a cell runs over several lines or {MAX_CELL} "
                                       "characters; look for a quote (\") that is not closed")
                if len(row) != 2:
                    raise SettingError(f"{where}, line {line}: expected two columns (term, also), found {len(row)}; "
                                       "separate the everyday words with | inside the second column")
                if len(entries) >= MAX_ROWS:
                    raise SettingError(f"{where}: more than {MAX_ROWS} rows; the file is rejected (split the "
                                       "pack or keep the terms customers most often name otherwise)")
                term = _clean(row[0])  # kept as the documents write it ("wi-fi"), matched as a phrase
                also = tuple(dict.fromkeys(a for a in (_clean(x) for x in row[1].split("|"))
                                           if a and _phrase(a) and _phrase(a) != _phrase(term)))
                if not _phrase(term) or not also:
                    raise SettingError(f"{where}, line {line}: a term and at least one other word for it are needed")
                entries.append((term, also))
        except csv.Error as exc:
            raise SettingError(f"{where}, line {read + 1}: not valid CSV ({exc}); look for a quote (\") "
                               "that is not closed") from exc
        if header is None:
            raise SettingError(f"{where}: the first line must be the header `term,also`")
        return cls(tuple(entries))

    def terms_for(self, text: str) -> list[str]:
        """The institution terms whose everyday words `text` uses while it does not name the term itself. The
        longest phrase at a place wins ("bounce protection" is one phrase, and its "bounce" names nothing more)."""
        words = [_key(w) for w in _words(_normal(text))]
        index = self._by_first  # type: ignore[attr-defined]
        named = {n for at, word in enumerate(words) for phrase, n, is_term in index.get(word, ())
                 if is_term and tuple(words[at:at + len(phrase)]) == phrase}
        used: list[int] = []
        at = 0
        while at < len(words):
            for phrase, n, is_term in index.get(words[at], ()):
                if tuple(words[at:at + len(phrase)]) == phrase:
                    if not is_term:
                        used.append(n)
                    at += len(phrase)
                    break
            else:
                at += 1
        return [self.entries[n][0] for n in dict.fromkeys(used) if n not in named]

    def spelling_exceptions(self, correct: Callable[[str], str]) -> frozenset[str]:
        """The glossary's words (lower case) that the spelling correction `correct` (one word in, one out) would
        turn into a word of another meaning: "echeck" is not a misspelled "check", nor "venmo" "venom", nor
        "zelle" "belle". A misspelling the glossary lists for its own term ("perscription") may still be
        corrected to it."""
        keep: set[str] = set()
        for term, also in self.entries:
            own = set(re.findall(r"[^\W\d_]+", " ".join((term, *also))))
            for word in own:
                fixed = correct(word).lower()
                if fixed != word and not set(re.findall(r"[^\W\d_]+", fixed)) <= own:
                    keep.add(word)
        return frozenset(keep)

    def expand(self, text: str) -> str:
        """`text` with the terms it means but does not name added in brackets (unchanged when there are none)."""
        found = self.terms_for(text)
        return f"{text} ({'; '.join(found)})" if found else text
