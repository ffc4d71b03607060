"""Document index: ingest industry documents, chunk, embed, store in FAISS on disk, search.

    python -m index build assistant/packs/bank/docs --out /tmp/bank-index
    python -m index query /tmp/bank-index "how much is a wire transfer?"
"""

from index.embed import Embedder, ModelSpecError, resolve_embedder
from index.search import Hit, Searcher
from index.store import IndexStore, build_index

__all__ = [
    "Embedder",
    "Hit",
    "IndexStore",
    "ModelSpecError",
    "Searcher",
    "build_index",
    "resolve_embedder",
]
