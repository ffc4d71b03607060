"""Optional cross-encoder reranking of search candidates.

A reranker is named like an embedder: a local directory holding a sentence-transformers
CrossEncoder, or a Hugging Face id (used only when the hub is reachable). No reranker model ships
with the project, so `--rerank` without one is a clear error and tests skip when none is present.
Set RA_RERANKER to make one the default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from index.embed import ModelSpecError, hub_reachable, in_hub_cache, looks_like_hub_id


def default_reranker_spec() -> str | None:
    return os.environ.get("RA_RERANKER") or None


def resolve_reranker_path(spec: str | None) -> str:
    """Where to load the cross-encoder from, or a ModelSpecError that says what to do."""
    if not spec:
        raise ModelSpecError(
            "no reranker model configured: pass --reranker DIR_OR_HUB_ID or set RA_RERANKER "
            "(e.g. a local copy of cross-encoder/ms-marco-MiniLM-L6-v2)"
        )
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"reranker directory {path} has no config.json: is it a cross-encoder model?")
        return str(path)
    if not looks_like_hub_id(spec):
        raise ModelSpecError(f"reranker '{spec}' is neither an existing directory nor a Hugging Face id")
    if in_hub_cache(spec, "config.json") or hub_reachable():
        return spec
    raise ModelSpecError(f"reranker '{spec}' is not in the local Hugging Face cache and the hub is unreachable")


def reranker_available(spec: str | None = None) -> bool:
    try:
        resolve_reranker_path(spec or default_reranker_spec())
    except ModelSpecError:
        return False
    return True


@dataclass
class Reranker:
    """Scores (query, passage) pairs with a cross-encoder; higher is more relevant, in [0, 1]."""

    spec: str
    device: str | None = None
    batch_size: int = 32
    max_length: int = 512

    @cached_property
    def model(self):
        from sentence_transformers import CrossEncoder

        path = resolve_reranker_path(self.spec)
        try:
            return CrossEncoder(path, device=self.device, max_length=self.max_length)
        except (OSError, ValueError) as exc:
            raise ModelSpecError(f"reranker '{self.spec}' could not be loaded: {exc}") from exc

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        logits = self.model.predict([(query, p) for p in passages], batch_size=self.batch_size,
                                    show_progress_bar=False, convert_to_numpy=True)
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim == 2:  # two-label heads: take the "relevant" column
            logits = logits[:, -1]
        if logits.min() < 0 or logits.max() > 1:
            logits = 1 / (1 + np.exp(-logits))
        return logits


def resolve_reranker(spec: str | None = None, device: str | None = None) -> Reranker:
    """Validate the spec now and return a lazily loaded Reranker."""
    spec = spec or default_reranker_spec()
    resolve_reranker_path(spec)
    return Reranker(spec=spec, device=device)
