"""Search an index: dense (FAISS), BM25 (bm25s), adaptive hybrid fusion, optional cross-encoder rerank.

Hybrid search takes the top `depth` candidates of each retriever, scores every candidate with both
(exact cosine from the stored vectors, BM25 from the keyword index), scales the BM25 scores by the
query's best BM25 score and mixes the two: `w * cosine + (1 - w) * bm25 / best_bm25`. The dense weight
`w` is set per query from a few features of the query and of both result lists (`FEATURES`): a long,
chatty message whose words BM25 scatters over unrelated passages leans on dense search (w near 0.85),
a short keyword query on which both retrievers agree mixes more evenly (w near 0.6). The small logistic
model behind it was fitted by `python -m index.fit_fusion` on MedQuAD questions, as written and
rewritten in a consumer's voice; `FusionConfig(adaptive=False)` gives the fixed 50/50 fusion, tuned on
clean questions only, which loses 0.09 nDCG@10 to dense search on noisy ones. Reciprocal-rank fusion
came out below score fusion on MedQuAD.

Every hit carries its dense cosine; `min_score` applies to it, so "nothing relevant" means the same
thing in every mode.

Uploads waiting for an administrator's approval (index/uploads.py) are searched only for the session
that uploaded them: `search(..., session=ID)`. Their vectors are excluded inside FAISS and their BM25
scores zeroed before fusion, so another session's results are exactly those of an index without them.
A Searcher keeps the version it opened (readers are never disturbed by a writer); `refresh()` moves it
to the live version, so that an upload or an approval written by another process is searched too.

On an index in Milvus (index/milvus_store.py) the engine ranks: a vector search, its BM25 function, or its
hybrid_search; each hit's cosine still comes from the stored vector, so `min_score` means the same there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from index.bm25 import index_terms
from index.embed import Embedder
from index.errors import SettingError
from index.rerank import Reranker
from index.store import IndexError_, IndexStore

log = logging.getLogger(__name__)

# Cosine similarity below which a passage is taken as unrelated to the query. Chosen on the bundled
# embedder: on-topic policy questions score 0.40-0.75 against their passage, unrelated chit-chat < 0.25.
DEFAULT_MIN_SCORE = 0.30
MODES = ("hybrid", "dense", "bm25")


# Per-query features of the adaptive fusion, in the order of FusionConfig.coefs; all free of the corpus's
# score scale, so that a model fitted on one index carries over to another.
FEATURES = ("log_terms", "overlap10", "coverage")


def query_features(n_terms: int, dense_rows: np.ndarray, bm25_rows: np.ndarray, bm25_best: float,
                   bm25_ceiling: float) -> np.ndarray:
    """FEATURES of one query, from its BM25 term count and both retrievers' rankings (best first).

    log_terms: log2(1 + query terms after stopwords); overlap10: share of the dense top 10 also in the BM25
    top 10 (the two agree); coverage: best BM25 score / BM25Index.ceiling (how much of the query one chunk
    explains: a chatty message scatters its words over chunks that have nothing to do with the answer).
    """
    top = max(1, min(10, len(dense_rows)))
    overlap = len(set(dense_rows[:10].tolist()) & set(bm25_rows[:10].tolist())) / top
    coverage = bm25_best / bm25_ceiling if bm25_ceiling > 0 else 0.0
    return np.array([np.log2(1 + n_terms), overlap, coverage], dtype=np.float64)


@dataclass
class FusionConfig:
    """How hybrid search mixes dense and BM25 scores (see the module doc).

    adaptive: dense weight = sigmoid(bias + coefs . query_features) per query; otherwise `dense_weight`.
    """

    adaptive: bool = True
    dense_weight: float = 0.5  # the fixed weight: best on clean MedQuAD questions (even ones), 0.3-0.8 swept
    # Fitted by `python -m index.fit_fusion` on MedQuAD dev's even-numbered questions, 2,304 as written and
    # their 2,304 index/noisy.py rewrites (seed 0): more query terms -> more dense, more agreement between
    # the two top 10s -> more BM25. Held-out nDCG@10 (`make bench-index`), adaptive / fixed 0.5 / dense:
    # odd questions 0.9657 / 0.9670 / 0.9592; their noisy rewrites 0.8678 / 0.7618 / 0.8512; the 180
    # hand-written consumer messages of index/devsets 0.9403 / 0.8964 / 0.9437.
    bias: float = 0.2299
    coefs: tuple[float, ...] = (0.452, -2.9639, 0.7966)
    depth: int = 50
    rerank_depth: int = 20
    rerank_weight: float = 0.7  # share of the final score taken by the cross-encoder

    def __post_init__(self) -> None:
        if not 0 <= self.dense_weight <= 1:
            raise SettingError(f"FusionConfig.dense_weight must be in [0, 1], not {self.dense_weight}")
        if len(self.coefs) != len(FEATURES):
            raise SettingError(f"FusionConfig.coefs needs {len(FEATURES)} values, one per feature in "
                             f"{', '.join(FEATURES)}; got {len(self.coefs)}")

    def weight(self, features: np.ndarray) -> float:
        """Dense share of the fused score for a query with these FEATURES."""
        if not self.adaptive:
            return self.dense_weight
        return float(1 / (1 + np.exp(-(self.bias + float(np.dot(self.coefs, features))))))


@dataclass
class Candidates:
    """One query's hybrid candidates, scored by both retrievers, and its fusion features."""

    rows: np.ndarray
    cosines: np.ndarray
    bm25: np.ndarray
    bm25_norm: np.ndarray  # bm25 / the query's best BM25 score over the whole index
    features: np.ndarray

    def fused(self, dense_weight: float) -> np.ndarray:
        return dense_weight * self.cosines + (1 - dense_weight) * self.bm25_norm


@dataclass
class Hit:
    chunk_id: str
    source: str
    title: str
    text: str
    score: float
    page: int | None = None
    headings: list[str] = field(default_factory=list)
    content_hash: str = ""
    dense_score: float = 0.0
    bm25_score: float = 0.0
    rerank_score: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class Searcher:
    """Query one index with the embedder it was built with."""

    def __init__(self, store: IndexStore, embedder: Embedder, reranker: Reranker | None = None,
                 fusion: FusionConfig | None = None, spelling: bool = True):
        if store.manifest.embedder != embedder.name:
            raise SettingError(
                f"index was built with embedder '{store.manifest.embedder}', not '{embedder.name}'"
            )
        self.store, self.embedder, self.reranker = store, embedder, reranker
        self.fusion = fusion or FusionConfig()
        self.spelling = spelling
        self.keep: frozenset[str] = frozenset()  # words never corrected (a pack glossary's everyday words)
        self._lock = threading.Lock()

    def correct(self, query: str) -> str:
        """`query` with its misspelled words corrected to the index's words (index/spelling.py); as it is
        when `spelling` is off."""
        return self.store.speller().correct(query, self.keep) if self.spelling else query

    def corrections(self, query: str) -> dict[str, str]:
        """{written word: corrected word} for the words `correct` changes."""
        return self.store.speller().corrections(query, self.keep) if self.spelling else {}

    def search(self, query: str, k: int = 5, min_score: float = 0.0, mode: str = "hybrid",
               rerank: bool = False, exclude: set[str] | None = None, session: str | None = None) -> list[Hit]:
        """Top-k passages with dense score >= min_score, best first, one per distinct text.

        `exclude` drops hits from those sources (as if the documents were not indexed; evaluation uses it).
        `session` also searches the uploads that session made and no administrator has approved yet.
        """
        return self.search_many([query], k=k, min_score=min_score, mode=mode, rerank=rerank, exclude=exclude,
                                session=session)[0]

    def search_many(self, queries: Sequence[str], k: int = 5, min_score: float = 0.0,
                    mode: str = "hybrid", rerank: bool = False, exclude: set[str] | None = None,
                    session: str | None = None) -> list[list[Hit]]:
        """Search several queries at once: one batched embedding call, then per-query fusion."""
        if mode not in MODES:
            raise SettingError(f"unknown search mode '{mode}': choose one of {', '.join(MODES)}")
        if rerank and self.reranker is None:
            raise SettingError("reranking asked for but no reranker is configured (--reranker or RA_RERANKER)")
        store = self.store  # one version from start to end: row numbers never mix versions
        if self.spelling:
            queries = [store.speller().correct(q, self.keep) for q in queries]
        results: list[list[Hit]] = [[] for _ in queries]
        live = [i for i, q in enumerate(queries) if q.strip()]
        if not live or len(store) == 0:
            return results
        hidden = store.hidden_rows(session)
        vectors = self.embedder.encode([queries[i] for i in live])
        depth = self._depth(store, k)
        if getattr(store, "native_ranking", False):  # Milvus ranks itself (dense, BM25, hybrid_search)
            ranked_all = store.rank([queries[i] for i in live], vectors, depth, mode, hidden)
            for i, ranked in zip(live, ranked_all, strict=True):
                if rerank:
                    ranked = self._rerank(store, queries[i], ranked)
                results[i] = self._hits(store, ranked, k, min_score, exclude)
            return results
        dense_scores, dense_rows = store.search_vectors(vectors, depth, hidden)
        for n, i in enumerate(live):
            ranked = self._rank(store, queries[i], vectors[n], dense_rows[n], dense_scores[n], depth, mode, hidden)
            if rerank:
                ranked = self._rerank(store, queries[i], ranked)
            results[i] = self._hits(store, ranked, k, min_score, exclude)
        return results

    def hybrid_candidates(self, queries: Sequence[str], k: int = 5) -> list[Candidates]:
        """Each query's hybrid candidates before fusion, as search_many(k=k) sees them (for fitting)."""
        store = self.store
        if len(store) == 0:
            raise SettingError("the index is empty: build it first (python -m index build)")
        if getattr(store, "native_ranking", False):
            raise SettingError("fitting the adaptive fusion needs a FAISS index (every chunk's BM25 score): "
                             "build one with `python -m index build SRC --out DIR` and fit on it")
        hidden = store.hidden_rows(None)
        if self.spelling:
            queries = [store.speller().correct(q, self.keep) for q in queries]
        vectors = self.embedder.encode(list(queries))
        depth = self._depth(store, k)
        _, dense_rows = store.search_vectors(vectors, depth, hidden)
        out = []
        for query, vector, rows in zip(queries, vectors, dense_rows, strict=True):
            bm25_all, top = self._bm25_top(store, query, depth, hidden)
            out.append(self._candidates(store, query, vector, rows[rows >= 0], bm25_all, top))
        return out

    def refresh(self) -> IndexStore:
        """Move to the index's live version when another writer replaced the one held (an upload or an
        approval made elsewhere); queries already running finish on the version they started with."""
        store = self.store
        live = store.live_version()
        if live is None or live == store.version:  # None: being replaced; keep answering from the version held
            return store
        with self._lock:
            if self.store.version != live:
                try:
                    self.store = store.reopen(embedder=self.embedder.name)
                except IndexError_ as exc:  # rebuilt with another embedder: this Searcher cannot read it
                    log.warning("index %s changed and cannot be followed (%s); searching version %s",
                                getattr(store, "root", store), exc, store.version)
                    return store
            return self.store

    def _depth(self, store: IndexStore, k: int) -> int:
        return min(len(store), max(self.fusion.depth, 3 * k, k + 10))

    def _bm25_top(self, store: IndexStore, query: str, depth: int,
                  hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """BM25 scores of every row (0 for hidden rows), and the rows of the best `depth` with a positive
        score, best first."""
        bm25_all = store.bm25.scores(query)
        if len(hidden):
            bm25_all = bm25_all.copy()
            bm25_all[hidden] = 0.0
        top = np.argpartition(-bm25_all, min(depth, len(bm25_all)) - 1)[:depth]
        top = top[bm25_all[top] > 0]
        return bm25_all, top[np.argsort(-bm25_all[top], kind="stable")]

    def _rank(self, store: IndexStore, query: str, vector: np.ndarray, dense_rows: np.ndarray,
              dense_scores: np.ndarray, depth: int, mode: str,
              hidden: np.ndarray) -> list[tuple[int, float, float, float]]:
        """Candidates as (row, fused score, dense cosine, bm25), best first."""
        keep = dense_rows >= 0
        dense_rows, dense_scores = dense_rows[keep], dense_scores[keep]
        if mode == "dense":
            return [(int(r), float(s), float(s), 0.0) for r, s in zip(dense_rows, dense_scores, strict=True)]
        bm25_all, top = self._bm25_top(store, query, depth, hidden)
        if mode == "bm25":
            cosines = store.cosines(vector, top)
            return [(int(r), float(bm25_all[r]), float(c), float(bm25_all[r]))
                    for r, c in zip(top, cosines, strict=True)]
        cand = self._candidates(store, query, vector, dense_rows, bm25_all, top)
        fused = cand.fused(self.fusion.weight(cand.features))
        order = np.argsort(-fused, kind="stable")
        return [(int(cand.rows[j]), float(fused[j]), float(cand.cosines[j]), float(cand.bm25[j])) for j in order]

    def _candidates(self, store: IndexStore, query: str, vector: np.ndarray, dense_rows: np.ndarray,
                    bm25_all: np.ndarray, bm25_top: np.ndarray) -> Candidates:
        # dense rows first, in their order: exact ties (the same passage in several documents) then rank
        # as in dense search, so that a dense weight of 1 gives exactly the dense ranking
        rows = np.concatenate([dense_rows, bm25_top[~np.isin(bm25_top, dense_rows)]])
        cosines = store.cosines(vector, rows)
        bm25 = bm25_all[rows]
        scale = float(bm25_all.max())
        terms = index_terms(query)
        features = query_features(len(terms), dense_rows, bm25_top, scale, store.bm25.ceiling(terms))
        return Candidates(rows, cosines, bm25, bm25 / scale if scale > 0 else bm25, features)

    def _rerank(self, store: IndexStore, query: str, ranked: list[tuple[int, float, float, float]]) -> list[tuple]:
        head = ranked[: self.fusion.rerank_depth]
        records = store.chunks(r for r, *_ in head)
        texts = [records[r]["text"] for r, *_ in head]
        scores = self.reranker.score(query, texts)
        top = max((s for _, s, *_ in head), default=1.0) or 1.0
        w = self.fusion.rerank_weight
        mixed = [(r, w * float(rs) + (1 - w) * s / top, d, b, float(rs))
                 for (r, s, d, b), rs in zip(head, scores, strict=True)]
        mixed.sort(key=lambda t: -t[1])
        return mixed + [(*t, None) for t in ranked[self.fusion.rerank_depth:]]

    def _hits(self, store: IndexStore, ranked: list[tuple], k: int, min_score: float,
              exclude: set[str] | None = None) -> list[Hit]:
        wanted = [t for t in ranked if t[2] >= min_score]
        wanted = wanted if exclude else wanted[: max(3 * k, k + 10)]
        records = store.chunks(t[0] for t in wanted)
        hits: list[Hit] = []
        seen: set[str] = set()
        for row, score, dense, bm25, *rest in wanted:
            record = records.get(row)
            if record is None:  # deleted since the search: a Milvus index is updated in place
                continue
            if record["content_hash"] in seen or (exclude and record["source"] in exclude):
                continue
            seen.add(record["content_hash"])
            hits.append(Hit(chunk_id=record["chunk_id"], source=record["source"], title=record["title"],
                            text=record["text"], score=round(score, 4), page=record["page"],
                            headings=record["headings"], content_hash=record["content_hash"],
                            dense_score=round(dense, 4), bm25_score=round(bm25, 4),
                            rerank_score=round(rest[0], 4) if rest and rest[0] is not None else None))
            if len(hits) == k:
                break
        return hits
