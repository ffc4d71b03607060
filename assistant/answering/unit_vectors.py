"""The evidence selector's sentence vectors, kept on disk between runs.

Before answering fast, the assistant embeds every sentence of a pack-sized index with each encoder of the
evidence step (the index's embedder, the larger encoder that reads sentences in context, the tuned second
opinion): about 20 s of the 2 cores at each start. The vectors are saved once under the data directory, one file
per encoder, and read back at the next start; a file is only used by the same encoder (its spec, back end and
model files, so a reinstalled or retuned model gets new vectors), and a damaged one is ignored and written again.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import os
import uuid
import zipfile
from pathlib import Path

import numpy as np

from assistant.answering.evidence import EvidenceSelector, _identity, _with_context, units
from index.search import Hit

log = logging.getLogger(__name__)

# what reading a truncated, overwritten or foreign file raises
_DAMAGED = (OSError, ValueError, KeyError, UnicodeDecodeError, EOFError, zipfile.BadZipFile)


def fingerprint(embedder) -> str | None:
    """A name for this encoder's vectors, or None when it cannot be told apart from another (no model folder)."""
    path = getattr(embedder, "path", None)
    if not path or not Path(path).is_dir():
        return None
    name, backend = _identity(embedder)
    runtime = "onnxruntime" if backend == "onnx-int8" else "torch"
    try:
        version = importlib.metadata.version(runtime)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    parts = [name, backend, f"{runtime} {version}", str(Path(path).resolve())]
    for file in sorted(Path(path).rglob("*")):
        if file.is_file():
            stat = file.stat()
            parts.append(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _write(out, texts: list[str], vectors: np.ndarray) -> None:
    encoded = [t.encode("utf-8") for t in texts]
    np.savez(out, text=np.frombuffer(b"".join(encoded), dtype=np.uint8),
             ends=np.cumsum([len(e) for e in encoded], dtype=np.int64), vectors=vectors.astype(np.float32))


def _read(file: Path) -> tuple[list[str], np.ndarray]:
    with np.load(file, allow_pickle=False) as saved:
        blob, ends, vectors = saved["text"].tobytes(), saved["ends"], saved["vectors"]
    if (vectors.dtype != np.float32 or vectors.ndim != 2 or len(ends) != len(vectors)
            or (len(ends) and (ends[-1] != len(blob) or ends[0] < 0 or np.any(np.diff(ends) < 0)))):
        raise ValueError(f"{len(ends)} texts of {len(blob)} bytes for vectors of shape {vectors.shape}")
    starts = [0, *ends[:-1].tolist()]
    return [blob[a:b].decode("utf-8") for a, b in zip(starts, ends.tolist(), strict=True)], vectors


def _needed(selector: EvidenceSelector, hits: list[Hit]) -> dict[tuple, tuple[object, dict, list[str]]]:
    """Per encoder: (embedder, its vector cache, the texts it embeds for these passages)."""
    pairs = [(_with_context(h, u), u) for h in hits for u in units(h.text)]
    out: dict[tuple, tuple[object, dict, list[str]]] = {}
    for embedder, cache, texts in ((selector.context_embedder, selector._context_cache, [c for c, _ in pairs]),
                                   (selector.embedder, selector._cache, [u for _, u in pairs])):
        key = _identity(embedder)
        if key in out:
            texts = [*out[key][2], *texts]
        out[key] = (embedder, cache, list(dict.fromkeys(texts)))
    return out


def restore(selector: EvidenceSelector, folder: Path) -> int:
    """Read the vectors saved for this selector's encoders into its caches; the number of vectors read."""
    read = 0
    for embedder, cache, _ in _needed(selector, []).values():
        name = fingerprint(embedder)
        file = Path(folder) / f"{name}.npz"
        if name is None or not file.exists():
            continue
        try:
            texts, vectors = _read(file)
        except _DAMAGED as exc:
            log.warning("ignoring the saved sentence vectors %s (%s): they will be computed again", file, exc)
            continue
        with selector._lock:
            cache.update(zip(texts, vectors, strict=True))
        read += len(texts)
    return read


def persist(selector: EvidenceSelector, folder: Path, hits: list[Hit]) -> int:
    """Save this selector's vectors of these passages' sentences (embedding any it lacks), one file per encoder,
    replacing the last; the number written. A folder that cannot be written costs only the next start's time."""
    written = 0
    for embedder, _, texts in _needed(selector, hits).values():
        name = fingerprint(embedder)
        if name is None or not texts:
            continue
        file = Path(folder) / f"{name}.npz"
        vectors = selector._vectors(texts, context=embedder is selector.context_embedder
                                    and embedder is not selector.embedder)
        if file.exists():
            try:
                saved_texts, saved_vectors = _read(file)
                if saved_texts == texts and np.array_equal(saved_vectors, vectors):
                    continue  # nothing new since the last start
            except _DAMAGED:
                pass  # damaged: written again below
        temporary = file.with_name(f".{file.stem}.{uuid.uuid4().hex}.npz")
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as out:
                _write(out, texts, vectors)
            os.replace(temporary, file)
            written += len(texts)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            log.warning("could not save the sentence vectors to %s (%s): they will be computed again at the next "
                        "start", folder, exc)
    return written
