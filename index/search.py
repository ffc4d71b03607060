"""Search an index: dense (FAISS inner product on normalised embeddings) with a relevance threshold."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from index.embed import Embedder
from index.store import IndexStore

# Cosine similarity below which a passage is taken as unrelated to the query. Chosen on the bundled
# embedder: on-topic policy questions score 0.40-0.75 against their passage, unrelated chit-chat < 0.25.
DEFAULT_MIN_SCORE = 0.30


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

    def to_dict(self) -> dict:
        return asdict(self)


class Searcher:
    """Query one index with the embedder it was built with."""

    def __init__(self, store: IndexStore, embedder: Embedder):
        if store.manifest.embedder != embedder.name:
            raise ValueError(
                f"index was built with embedder '{store.manifest.embedder}', not '{embedder.name}'"
            )
        self.store, self.embedder = store, embedder

    def search(self, query: str, k: int = 5, min_score: float = 0.0) -> list[Hit]:
        """Top-k passages with score >= min_score, best first, one per distinct text."""
        if not query.strip() or len(self.store) == 0:
            return []
        vector = self.embedder.encode([query])
        depth = min(len(self.store), max(k * 3, k + 10))
        scores, rows = self.store.vectors.search(vector, depth)
        pairs = [(float(s), int(r)) for s, r in zip(scores[0], rows[0], strict=True) if r >= 0]
        records = self.store.chunks(r for _, r in pairs)
        hits: list[Hit] = []
        seen: set[str] = set()
        for score, row in pairs:
            record = records[row]
            if score < min_score or record["content_hash"] in seen:
                continue
            seen.add(record["content_hash"])
            hits.append(Hit(chunk_id=record["chunk_id"], source=record["source"], title=record["title"],
                            text=record["text"], score=round(score, 4), page=record["page"],
                            headings=record["headings"], content_hash=record["content_hash"]))
            if len(hits) == k:
                break
        return hits

