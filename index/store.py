"""The index on disk: FAISS vectors, SQLite chunk metadata and a manifest, swapped in atomically.

Layout of an index directory:

    DIR/CURRENT                 name of the live version (replaced atomically)
    DIR/.lock                   writers hold an exclusive flock
    DIR/versions/<name>/        manifest.json, vectors.faiss, chunks.sqlite

A build writes a complete new version beside the live one and then flips CURRENT, so a crash or
`kill -9` at any point leaves the previous version loadable, and readers that opened it keep working.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from index.chunk import Chunk, ChunkConfig, chunk_document, tokenizer_counter
from index.embed import Embedder
from index.ingest import IngestError, iter_files, load_document

FORMAT_VERSION = 1


class IndexError_(RuntimeError):
    """An index that cannot be opened or updated as asked; the message says what to do."""


@dataclass
class Manifest:
    embedder: str
    dimension: int
    chunk_size: int
    chunk_overlap: int
    n_chunks: int
    n_files: int
    index_type: str = "flat"
    format_version: int = FORMAT_VERSION
    created: float = field(default_factory=time.time)
    sources: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


@dataclass
class BuildReport:
    version: str
    files_indexed: int
    files_reused: int
    files_removed: int
    chunks: int
    chunks_embedded: int
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"indexed {self.files_indexed} file(s), reused {self.files_reused} unchanged, "
            f"removed {self.files_removed}; {self.chunks} chunks ({self.chunks_embedded} embedded) "
            f"in {self.seconds:.1f} s"
        ]
        lines += [f"skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_SCHEMA = """
CREATE TABLE chunks (
    row INTEGER PRIMARY KEY, chunk_id TEXT, path TEXT, source TEXT, title TEXT, headings TEXT,
    page INTEGER, start INTEGER, "end" INTEGER, text TEXT, content_hash TEXT, file_hash TEXT
);
CREATE TABLE files (path TEXT PRIMARY KEY, source TEXT, file_hash TEXT, n_chunks INTEGER);
CREATE INDEX chunks_path ON chunks(path);
"""


class IndexStore:
    """A read-only view of one version of an index directory."""

    def __init__(self, root: Path, version: str, manifest: Manifest, vectors, db: sqlite3.Connection):
        self.root, self.version, self.manifest, self.vectors, self.db = root, version, manifest, vectors, db

    @classmethod
    def exists(cls, root: str | Path) -> bool:
        return (Path(root) / "CURRENT").is_file()

    @classmethod
    def open(cls, root: str | Path, embedder: str | None = None) -> IndexStore:
        import faiss

        root = Path(root)
        if not cls.exists(root):
            raise IndexError_(f"no index at {root}: build one with `python -m index build SRC --out {root}`")
        version = (root / "CURRENT").read_text().strip()
        vdir = root / "versions" / version
        try:
            manifest = Manifest(**json.loads((vdir / "manifest.json").read_text()))
        except (OSError, TypeError, json.JSONDecodeError) as exc:
            raise IndexError_(f"index at {root} is damaged ({exc}): rebuild it with `python -m index build`") from exc
        if manifest.format_version != FORMAT_VERSION:
            raise IndexError_(
                f"index at {root} has format {manifest.format_version}, this version reads {FORMAT_VERSION}: rebuild it"
            )
        if embedder is not None and embedder != manifest.embedder:
            raise IndexError_(
                f"index at {root} was built with embedder '{manifest.embedder}', not '{embedder}': "
                f"query it with --embedder {manifest.embedder} or rebuild it with the new embedder"
            )
        vectors = faiss.read_index(str(vdir / "vectors.faiss"))
        db = sqlite3.connect(f"file:{vdir / 'chunks.sqlite'}?mode=ro", uri=True, check_same_thread=False)
        return cls(root, version, manifest, vectors, db)

    def __len__(self) -> int:
        return self.manifest.n_chunks

    def chunks(self, rows: Iterable[int]) -> dict[int, dict]:
        rows = [int(r) for r in rows]
        if not rows:
            return {}
        marks = ",".join("?" * len(rows))
        cur = self.db.execute(f"SELECT * FROM chunks WHERE row IN ({marks})", rows)
        names = [d[0] for d in cur.description]
        out = {}
        for values in cur.fetchall():
            record = dict(zip(names, values, strict=True))
            record["headings"] = json.loads(record["headings"])
            out[record["row"]] = record
        return out

    def files(self) -> dict[str, dict]:
        cur = self.db.execute("SELECT path, source, file_hash, n_chunks FROM files")
        return {p: {"source": s, "file_hash": h, "n_chunks": n} for p, s, h, n in cur.fetchall()}

    def rows_for_path(self, path: str) -> list[int]:
        return [r for (r,) in self.db.execute("SELECT row FROM chunks WHERE path = ? ORDER BY row", (path,))]

    def close(self) -> None:
        self.db.close()


@contextmanager
def writer_lock(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _display_names(paths: list[str]) -> dict[Path, str]:
    """Map each file to the name users see: its path relative to the argument it came from."""
    names: dict[Path, str] = {}
    for raw in paths:
        base = Path(raw)
        for file in iter_files([base]):
            names[file.resolve()] = str(file.relative_to(base)) if base.is_dir() else file.name
    return names


def build_index(
    sources: list[str],
    out: str | Path,
    embedder: Embedder,
    chunking: ChunkConfig | None = None,
    *,
    progress: bool = True,
    extra: dict | None = None,
) -> BuildReport:
    """Index every file under `sources` into `out`, re-embedding only files whose content changed."""
    import faiss

    started = time.time()
    chunking = chunking or ChunkConfig()
    root = Path(out)
    for src in sources:
        if not Path(src).exists():
            raise IndexError_(f"source {src} does not exist")
    with writer_lock(root):
        previous = None
        if IndexStore.exists(root):
            try:
                previous = IndexStore.open(root)
            except IndexError_:
                previous = None  # damaged or old format: rebuild everything
        reusable = previous is not None and (
            previous.manifest.embedder == embedder.name
            and previous.manifest.chunk_size == chunking.chunk_size
            and previous.manifest.chunk_overlap == chunking.chunk_overlap
        )
        old_files = previous.files() if reusable else {}
        names = _display_names(sources)
        count = tokenizer_counter(embedder.tokenizer)

        kept: list[tuple[Chunk, np.ndarray | None, str]] = []
        files: dict[str, tuple[str, str, int]] = {}
        skipped: list[tuple[str, str]] = []
        reused = indexed = 0
        paths = sorted(names)
        for path in tqdm(paths, desc="reading", unit="file", disable=not progress):
            key, name = str(path), names[path]
            try:
                digest = file_sha256(path)
            except OSError as exc:
                skipped.append((name, f"unreadable: {exc.strerror}"))
                continue
            old = old_files.get(key)
            if old is not None and old["file_hash"] == digest:
                rows = previous.rows_for_path(key)
                records = previous.chunks(rows)
                vectors = previous.vectors.reconstruct_batch(np.array(rows, dtype=np.int64))
                for row, vec in zip(rows, vectors, strict=True):
                    r = records[row]
                    chunk = Chunk(text=r["text"], source=r["source"], title=r["title"], headings=r["headings"],
                                  page=r["page"], start=r["start"], end=r["end"], file_hash=r["file_hash"])
                    kept.append((chunk, vec, key))
                files[key] = (name, digest, len(rows))
                reused += 1
                continue
            try:
                doc = load_document(path)
            except IngestError as exc:
                skipped.append((name, str(exc)))
                continue
            doc.source = name
            chunks = chunk_document(doc, count, chunking, file_hash=digest)
            kept += [(c, None, key) for c in chunks]
            files[key] = (name, digest, len(chunks))
            indexed += 1

        todo = [i for i, (_, vec, _) in enumerate(kept) if vec is None]
        if todo:
            fresh = embedder.encode([kept[i][0].embed_text for i in todo], progress=progress)
            for i, vec in zip(todo, fresh, strict=True):
                kept[i] = (kept[i][0], vec, kept[i][2])
        dimension = embedder.dimension
        matrix = np.stack([v for _, v, _ in kept]).astype(np.float32) if kept else np.zeros((0, dimension), np.float32)
        index = faiss.IndexFlatIP(dimension)
        if len(matrix):
            index.add(matrix)
        removed = len(set(old_files) - set(files))
        manifest = Manifest(
            embedder=embedder.name, dimension=dimension, chunk_size=chunking.chunk_size,
            chunk_overlap=chunking.chunk_overlap, n_chunks=len(kept), n_files=len(files),
            sources=[str(Path(s).resolve()) for s in sources], extra=extra or {},
        )
        version = _write_version(root, manifest, index, kept, files)
        if previous is not None:
            previous.close()
        _prune(root, keep={version, previous.version if previous else ""})
    return BuildReport(version=version, files_indexed=indexed, files_reused=reused, files_removed=removed,
                       chunks=len(kept), chunks_embedded=len(todo), seconds=time.time() - started,
                       skipped=skipped)


def _write_version(root, manifest, index, kept, files) -> str:
    import faiss

    versions = root / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    name = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    tmp = versions / f".tmp-{name}"
    tmp.mkdir()
    faiss.write_index(index, str(tmp / "vectors.faiss"))
    db = sqlite3.connect(tmp / "chunks.sqlite")
    db.executescript(_SCHEMA)
    db.executemany(
        'INSERT INTO chunks (row, chunk_id, path, source, title, headings, page, start, "end", text, content_hash, file_hash)'
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            (row, c.chunk_id, key, c.source, c.title, json.dumps(c.headings), c.page,
             c.start, c.end, c.text, c.content_hash, c.file_hash)
            for row, (c, _, key) in enumerate(kept)
        ],
    )
    db.executemany("INSERT INTO files VALUES (?,?,?,?)", [(p, *v) for p, v in files.items()])
    db.commit()
    db.close()
    (tmp / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2))
    for f in tmp.iterdir():
        _fsync(f)
    final = versions / name
    os.replace(tmp, final)
    _fsync(versions)
    pointer = root / "CURRENT.tmp"
    pointer.write_text(name + "\n")
    _fsync(pointer)
    os.replace(pointer, root / "CURRENT")
    _fsync(root)
    return name


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(root: Path, keep: set[str]) -> None:
    """Drop versions no reader should still need (the live one and the one before stay) and crash leftovers."""
    for child in (root / "versions").iterdir():
        if child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)
