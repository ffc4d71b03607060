"""BM25 keyword search over chunks, with bm25s: stemmed English words, CJK character bigrams.

Our own tokenizer feeds bm25s token ids, so Chinese or Japanese text (no spaces between words)
is searchable too: runs of CJK characters become overlapping character bigrams.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

logging.getLogger("bm25s").setLevel(logging.WARNING)

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?|\d+(?:[.,:]\d+)*", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")

# bm25s's English list plus question words, which every FAQ question shares.
_EXTRA_STOPWORDS = {"what", "which", "who", "whom", "how", "why", "when", "where", "can", "do", "does",
                    "did", "i", "me", "my", "you", "your", "is", "are", "am", "s"}


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN) | _EXTRA_STOPWORDS


@lru_cache(maxsize=1)
def _stemmer():
    try:
        import Stemmer
    except ImportError:  # PyStemmer is a dependency; stay usable without it
        return None
    return Stemmer.Stemmer("english")


# what `index_terms` makes of a text; a BM25 index saved with another version is built again when opened
TOKENIZER_VERSION = 2  # 2: hyphenated compounds also as one word
_COMPOUND = re.compile(r"\b([^\W\d_]+)[-/]([^\W\d_]+)\b")


def index_terms(text: str) -> list[str]:
    """The words BM25 indexes and searches: `tokenize`, plus every hyphenated compound written as one word, so
    that "wifi" meets "Wi-Fi", "email" meets "e-mail" and "copay" meets "co-pay", whichever way each side spells it."""
    joined = " ".join(a + b for a, b in _COMPOUND.findall(text))
    return tokenize(text) + (tokenize(joined) if joined else [])


def tokenize(text: str) -> list[str]:
    """Lower-cased, stemmed words without stopwords; CJK runs as character bigrams."""
    text = text.lower()
    tokens: list[str] = []
    stop = _stopwords()
    cursor = 0
    for match in _CJK.finditer(text):
        tokens += [w for w in _WORD.findall(text[cursor:match.start()]) if w not in stop and len(w) > 1]
        run = match.group()
        tokens += [run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)]
        cursor = match.end()
    tokens += [w for w in _WORD.findall(text[cursor:]) if w not in stop and len(w) > 1]
    stemmer = _stemmer()
    if stemmer is not None:
        tokens = [t if _CJK.match(t) else s for t, s in zip(tokens, stemmer.stemWords(tokens), strict=True)]
    return tokens


class BM25Index:
    """A bm25s index over a list of texts, saved in and loaded from a directory."""

    def __init__(self, retriever, vocab: dict[str, int], tokenizer_version: int = TOKENIZER_VERSION):
        self.retriever, self.vocab, self.tokenizer_version = retriever, vocab, tokenizer_version
        self._term_max: np.ndarray | None = None  # best score of each term in any chunk, for ceiling()

    @classmethod
    def build(cls, texts: Sequence[str], k1: float = 1.2, b: float = 0.75) -> BM25Index:
        import bm25s

        vocab: dict[str, int] = {"": 0}  # bm25s wants an empty token for empty documents
        ids = []
        for text in texts:
            ids.append([vocab.setdefault(tok, len(vocab)) for tok in index_terms(text)] or [0])
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        if texts:
            retriever.index(bm25s.tokenization.Tokenized(ids=ids, vocab=vocab), show_progress=False,
                            create_empty_token=False)
        return cls(retriever, vocab)

    def __len__(self) -> int:
        scores = getattr(self.retriever, "scores", None)
        return int(scores["num_docs"]) if scores else 0

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for `query` (zeros when no query word is in the index)."""
        ids = [self.vocab[t] for t in index_terms(query) if t in self.vocab]
        if not ids or not len(self):
            return np.zeros(len(self), dtype=np.float32)
        return np.asarray(self.retriever.get_scores_from_ids(ids), dtype=np.float32)

    def ceiling(self, terms: list[str]) -> float:
        """BM25 score of an ideal chunk that matched every term as well as that term's best chunk does.

        A query's best score over this ceiling says how much of the query one chunk can explain: near 1
        for a keyword query, low for a chatty message whose words are spread over unrelated chunks.
        """
        if not len(self):
            return 0.0
        if self._term_max is None:
            indptr, data = self.retriever.scores["indptr"], self.retriever.scores["data"]
            self._term_max = np.zeros(len(indptr) - 1, dtype=np.float32)
            present = np.diff(indptr) > 0
            self._term_max[present] = np.maximum.reduceat(data, indptr[:-1][present])
        ids = [self.vocab[t] for t in terms if t in self.vocab]
        return float(self._term_max[ids].sum()) if ids else 0.0

    def top(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the k best documents with a positive score, best first."""
        scores = self.scores(query)
        k = min(k, len(scores))
        if k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        rows = np.argpartition(-scores, k - 1)[:k]
        rows = rows[np.argsort(-scores[rows], kind="stable")]
        rows = rows[scores[rows] > 0]
        return rows.astype(np.int64), scores[rows]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if len(self):
            self.retriever.save(str(directory))
        (directory / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False))
        (directory / "tokenizer.json").write_text(json.dumps({"version": self.tokenizer_version}))

    @classmethod
    def load(cls, directory: Path) -> BM25Index:
        import bm25s

        vocab = json.loads((directory / "vocab.json").read_text())
        if (directory / "params.index.json").exists():
            retriever = bm25s.BM25.load(str(directory), mmap=True)
        else:
            retriever = bm25s.BM25()
        try:
            version = int(json.loads((directory / "tokenizer.json").read_text())["version"])
        except (OSError, ValueError, KeyError, TypeError):
            version = 1  # saved before the version was recorded
        return cls(retriever, vocab, version)
