"""The index on disk: FAISS vectors, SQLite chunk metadata and a manifest, swapped in atomically.

Layout of an index directory:

    DIR/CURRENT                 name of the live version (replaced atomically)
    DIR/.lock                   writers hold an exclusive flock
    DIR/versions/<name>/        manifest.json, vectors.faiss, chunks.sqlite, bm25/

chunks.sqlite holds the chunks, the files, and an `uploads` table: who uploaded a file and when, and
whether it is still private to the uploader's session (index/uploads.py). Versions written before that
table existed read as having no uploads.

Every chunk is screened for prompt injection as it is written (assistant/compliance/injection.py: sentences that
address the assistant instead of the reader); a `quarantine` table holds the flagged units of each chunk by
content hash, the manifest names the model that screened (`screened_by`), and the build report lists what
was flagged. Unchanged chunks keep their marks while the model is the same. Versions written before
screening, or with `screen=False`, have no marks: the assistant screens their passages when it reads them.

A build writes a complete new version beside the live one and then flips CURRENT, so a crash or
`kill -9` at any point leaves the previous version loadable, and readers that opened it keep working.

The same functions take an index.milvus_store.MilvusLocation, or a directory holding only `milvus.json` (where
such an index lives), instead of an index directory: the index then lives in a Milvus collection (`--store
milvus`, index/milvus_store.py), and `IndexStore.open` returns a MilvusStore.
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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from index.bm25 import TOKENIZER_VERSION, BM25Index
from index.chunk import Chunk, ChunkConfig, chunk_document, tokenizer_counter
from index.embed import Embedder
from index.errors import UserError
from index.ingest import READER_VERSION, Document, IngestError, iter_files, load_document
from index.limits import IngestLimits
from index.quiet import progress_bar
from index.spelling import Speller, word_counts

FORMAT_VERSION = 2
# Past this many chunks the vectors go into an HNSW graph instead of an exact flat index: at 100k
# chunks exact search costs ~10 ms a query on 2 cores, HNSW well under 1 ms at recall@10 >= 0.95
# of exact (measured by `make bench-index`).
HNSW_THRESHOLD = 20_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
INDEX_TYPES = ("auto", "flat", "hnsw")


class IndexError_(UserError, RuntimeError):
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
    screened_by: str = ""  # the injection model that screened every chunk ("" = not screened)
    reader_version: int = 0  # index.ingest.READER_VERSION of the reader that cut the files (0: not recorded)


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
    quarantined: list[tuple[str, str, float]] = field(default_factory=list)  # (source, sentence, score), new this run

    def summary(self) -> str:
        lines = [
            f"indexed {self.files_indexed} file(s), reused {self.files_reused} unchanged, "
            f"removed {self.files_removed}; {self.chunks} chunks ({self.chunks_embedded} embedded) "
            f"in {self.seconds:.1f} s"
        ]
        lines += [f"skipped {path}: {reason}" for path, reason in self.skipped]
        lines += [f"quarantined {source}: \"{_short(text)}\" (injection score {score:.2f}; never quoted as evidence)"
                  for source, text, score in self.quarantined]
        return "\n".join(lines)


def _short(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class UploadRecord:
    """Who uploaded a file, when, and who may search it; kept with the index (table `uploads`)."""

    path: str  # the file's key in the index: where the upload is kept
    source: str  # the name results show, e.g. uploads/fees.md
    user: str | None  # login name, when logins are on
    session: str | None  # the uploader's session
    uploaded_at: float
    status: str  # "private": searched only for `session`; "shared": for everyone
    sha256: str = ""
    size: int = 0
    approved_by: str | None = None
    approved_at: float | None = None
    shared_root: str = ""  # the pack's uploads folder, where an approval moves a private upload

    @property
    def id(self) -> str:
        """A short stable handle for the CLI and the UI (the first 10 hex digits of the path's SHA-256)."""
        return hashlib.sha256(self.path.encode()).hexdigest()[:10]


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
CREATE TABLE uploads (
    path TEXT PRIMARY KEY, source TEXT, user TEXT, session TEXT, uploaded_at REAL, status TEXT, sha256 TEXT,
    size INTEGER, approved_by TEXT, approved_at REAL, shared_root TEXT
);
CREATE TABLE quarantine (content_hash TEXT PRIMARY KEY, units TEXT);
"""
_UPLOAD_COLUMNS = [f.name for f in fields(UploadRecord)]


class PrivateUploads:
    """What every store (FAISS, Milvus) derives from its upload records: the rows a session may not see.
    The store provides `uploads()`, `rows_for_path()` and a `_private_rows` cache (None until used)."""

    _private_rows: dict[str, np.ndarray] | None
    _speller: Speller | None = None

    def speller(self) -> Speller:
        """The spelling corrector over the words of every chunk all sessions may see (index/spelling.py);
        built on first use from this version's chunks, so a private upload's words never correct another
        session's query."""
        if self._speller is None:
            hidden = set(self.hidden_rows(None).tolist())
            self._speller = Speller(word_counts(text for row, text in self.texts() if row not in hidden))
        return self._speller

    def hidden_rows(self, session: str | None) -> np.ndarray:
        """Rows of private uploads that `session` did not make: what its searches must not see."""
        if self._private_rows is None:
            owned: dict[str, list[int]] = {}
            for record in self.uploads().values():
                if record.status == "private":
                    owned.setdefault(record.session or "", []).extend(self.rows_for_path(record.path))
            self._private_rows = {k: np.array(v, dtype=np.int64) for k, v in owned.items()}
        parts = [rows for owner, rows in self._private_rows.items() if session is None or owner != session]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def names_to_index(add: list[str], old_uploads: dict[str, UploadRecord], keep_others: bool) -> dict[Path, str]:
    """The files to read, with their display names; a rebuild keeps the uploads still waiting for an
    administrator."""
    names = _display_names(add)
    if not keep_others:
        for key, record in old_uploads.items():
            if record.status == "private" and Path(key).is_file():
                names.setdefault(Path(key), record.source)
    return names


def read_chunks(loader: Callable[[Path], Document], path: Path, name: str, count, chunking, digest: str,
                skipped: list[tuple[str, str]]) -> list[Chunk] | None:
    """The file's chunks, or None with its reason appended to `skipped` when it cannot be read."""
    try:
        doc = loader(path)
    except IngestError as exc:
        skipped.append((name, str(exc)))
        return None
    doc.source = name
    return chunk_document(doc, count, chunking, file_hash=digest)


class IndexStore(PrivateUploads):
    """A read-only view of one version of an index directory."""

    def __init__(self, root: Path, version: str, manifest: Manifest, vectors, db: sqlite3.Connection):
        self.root, self.version, self.manifest, self.vectors, self.db = root, version, manifest, vectors, db
        self._bm25: BM25Index | None = None
        self._uploads: dict[str, UploadRecord] | None = None
        self._private_rows: dict[str, np.ndarray] | None = None
        self._quarantined: dict[str, list[list[float]]] | None = None
        self._hashes: set[str] | None = None

    @property
    def path(self) -> Path:
        return self.root / "versions" / self.version

    @property
    def bm25(self) -> BM25Index:
        if self._bm25 is None:
            bm25 = BM25Index.load(self.path / "bm25")
            if bm25.tokenizer_version != TOKENIZER_VERSION:
                # saved by an earlier version that split words differently: built again from the stored chunks
                # (in memory; the next build saves it), so its queries meet its documents' words
                bm25 = BM25Index.build([Chunk(text=r["text"], source=r["source"], title=r["title"],
                                              headings=r["headings"]).embed_text
                                        for _, r in sorted(self.chunks(range(len(self))).items())])
            self._bm25 = bm25
        return self._bm25

    def search_vectors(self, queries: np.ndarray, depth: int,
                       hidden: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the `depth` nearest chunks per query vector (rows are -1 past the end),
        never one of the `hidden` rows."""
        import faiss

        selector = keep = None
        if hidden is not None and len(hidden):
            keep = faiss.IDSelectorBatch(np.asarray(hidden, dtype=np.int64))
            selector = faiss.IDSelectorNot(keep)  # `keep` stays referenced until the search is done
        if self.manifest.index_type == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(128, 2 * depth), sel=selector)
            return self.vectors.search(queries, depth, params=params)
        if selector is not None:
            return self.vectors.search(queries, depth, params=faiss.SearchParameters(sel=selector))
        return self.vectors.search(queries, depth)

    def uploads(self) -> dict[str, UploadRecord]:
        """Upload records by file key (empty for versions written before uploads were recorded)."""
        if self._uploads is None:
            has_table = self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'uploads'").fetchone()
            rows = self.db.execute(f"SELECT {', '.join(_UPLOAD_COLUMNS)} FROM uploads").fetchall() if has_table else []
            self._uploads = {r[0]: UploadRecord(*r) for r in rows}
        return self._uploads

    def quarantined(self) -> dict[str, list[list[float]]]:
        """Units flagged as prompt injection, by chunk content hash: [[start, end, score], ...] in the chunk's
        text (empty for versions written before screening; see `manifest.screened_by`)."""
        if self._quarantined is None:
            has_table = self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'quarantine'").fetchone()
            rows = self.db.execute("SELECT content_hash, units FROM quarantine").fetchall() if has_table else []
            self._quarantined = {h: json.loads(units) for h, units in rows}
        return self._quarantined

    def content_hashes(self) -> set[str]:
        """The content hash of every chunk (the texts this version screened, when it did)."""
        if self._hashes is None:
            self._hashes = {h for (h,) in self.db.execute("SELECT DISTINCT content_hash FROM chunks")}
        return self._hashes

    def cosines(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact cosine of the query with the stored vectors of `rows`."""
        if len(rows) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.vectors.reconstruct_batch(np.asarray(rows, dtype=np.int64)) @ query

    @classmethod
    def exists(cls, root: str | Path) -> bool:
        if (location := milvus_location(root)) is not None:
            from index.milvus_store import MilvusStore

            return MilvusStore.exists(location)
        return (Path(root) / "CURRENT").is_file()

    @classmethod
    def open(cls, root: str | Path, embedder: str | None = None) -> IndexStore:
        import faiss

        if (location := milvus_location(root)) is not None:
            from index.milvus_store import MilvusStore

            return MilvusStore.open(location, embedder=embedder)
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
        try:
            vectors = faiss.read_index(str(vdir / "vectors.faiss"))
        except RuntimeError as exc:
            raise IndexError_(f"index at {root} is damaged ({exc}): rebuild it with `python -m index build`") from exc
        db = sqlite3.connect(f"file:{vdir / 'chunks.sqlite'}?mode=ro", uri=True, check_same_thread=False)
        return cls(root, version, manifest, vectors, db)

    def live_version(self) -> str | None:
        """The version CURRENT names now (None while the directory is being replaced)."""
        try:
            return (self.root / "CURRENT").read_text().strip()
        except OSError:
            return None

    def reopen(self, embedder: str | None = None) -> IndexStore:
        return IndexStore.open(self.root, embedder=embedder)

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

    def texts(self) -> Iterator[tuple[int, str]]:
        """(row, title, headings and text) of every chunk."""
        for row, title, headings, text in self.db.execute("SELECT row, title, headings, text FROM chunks"):
            yield row, " \n".join([title or "", *json.loads(headings), text])

    def files(self) -> dict[str, dict]:
        cur = self.db.execute("SELECT path, source, file_hash, n_chunks FROM files")
        return {p: {"source": s, "file_hash": h, "n_chunks": n} for p, s, h, n in cur.fetchall()}

    def rows_for_path(self, path: str) -> list[int]:
        return [r for (r,) in self.db.execute("SELECT row FROM chunks WHERE path = ? ORDER BY row", (path,))]

    def stored_chunks(self, path: str) -> list[tuple[Chunk, np.ndarray]]:
        """The chunks of one indexed file with their vectors, for reuse in the next version."""
        rows = self.rows_for_path(path)
        if not rows:
            return []
        records = self.chunks(rows)
        vectors = self.vectors.reconstruct_batch(np.array(rows, dtype=np.int64))
        out = []
        for row, vec in zip(rows, vectors, strict=True):
            r = records[row]
            out.append((Chunk(text=r["text"], source=r["source"], title=r["title"], headings=r["headings"],
                              page=r["page"], start=r["start"], end=r["end"], file_hash=r["file_hash"]), vec))
        return out

    def close(self) -> None:
        self.db.close()


def milvus_location(where):
    """The index.milvus_store.MilvusLocation `where` is or points to (a directory with milvus.json), else None."""
    from index.milvus_store import pointed  # here: it imports this module (and no pymilvus)

    return pointed(where)


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
    index_type: str = "auto",
    limits: IngestLimits | None = None,
    screen: bool = True,
) -> BuildReport:
    """Make the index at `out` hold exactly the files under `sources` (and the uploads still waiting for
    approval, which only index/uploads.py adds or removes).

    Unchanged files (same SHA-256) keep their chunks and vectors; changed and new files are read (within
    `limits`) and embedded; files no longer present are dropped. `screen` marks prompt injection in new chunks.
    """
    return update_index(out, embedder, chunking, add=sources, keep_others=False, progress=progress,
                        extra=extra, index_type=index_type, loader=_loader(limits), screen=screen)


def add_to_index(out: str | Path, sources: list[str], embedder: Embedder, *, progress: bool = True,
                 index_type: str = "auto", limits: IngestLimits | None = None, screen: bool = True) -> BuildReport:
    """Add (or refresh) the files under `sources`, keeping everything else the index holds."""
    if milvus_location(out) is None and not IndexStore.exists(out):
        raise IndexError_(f"no index at {out}: create one with `python -m index build SRC --out {out}`")
    return update_index(out, embedder, None, add=sources, keep_others=True, progress=progress,
                        index_type=index_type, loader=_loader(limits), screen=screen)


def _loader(limits: IngestLimits | None) -> Callable[[Path], Document]:
    return lambda path: load_document(path, limits)


def remove_from_index(out: str | Path, names: list[str], embedder: Embedder, *,
                      progress: bool = True) -> BuildReport:
    """Drop files by the name shown in results (or their path, or a folder above them)."""
    if milvus_location(out) is None and not IndexStore.exists(out):
        raise IndexError_(f"no index at {out}")
    return update_index(out, embedder, None, add=[], keep_others=True, remove=names, progress=progress)


def update_index(
    out: str | Path,
    embedder: Embedder,
    chunking: ChunkConfig | None,
    *,
    add: list[str],
    keep_others: bool,
    remove: list[str] | None = None,
    progress: bool = True,
    extra: dict | None = None,
    index_type: str = "auto",
    uploads: dict[str, UploadRecord] | None = None,
    loader: Callable[[Path], Document] = load_document,
    screen: bool = True,
) -> BuildReport:
    """Write a new version of the index from the previous one plus `add` minus `remove`.

    `uploads` records who uploaded which of the added files (by file key); the records of files the new
    version keeps are carried over. `loader` parses a new or changed file (index/sandbox.py for uploads).
    `screen` marks prompt injection in every chunk the previous version did not screen with the same model.
    """
    if (location := milvus_location(out)) is not None:
        from index.milvus_store import update

        return update(location, embedder, chunking, add=add, keep_others=keep_others, remove=remove, progress=progress,
                      extra=extra, index_type=index_type, uploads=uploads, loader=loader, screen=screen)
    started = time.time()
    if index_type not in INDEX_TYPES:
        raise IndexError_(f"unknown index type '{index_type}': choose one of {', '.join(INDEX_TYPES)}")
    root = Path(out)
    for src in add:
        if not Path(src).exists():
            raise IndexError_(f"source {src} does not exist")
    with writer_lock(root):
        previous = None
        if IndexStore.exists(root):
            try:
                previous = IndexStore.open(root)
            except IndexError_:
                if keep_others:
                    raise
                previous = None  # damaged or old format: a full build starts afresh
        if chunking is None:
            chunking = (ChunkConfig(previous.manifest.chunk_size, previous.manifest.chunk_overlap)
                        if previous else ChunkConfig())
        if previous is not None and previous.manifest.embedder != embedder.name:
            if keep_others:
                raise IndexError_(
                    f"index at {root} was built with embedder '{previous.manifest.embedder}', not "
                    f"'{embedder.name}': use --embedder {previous.manifest.embedder} or rebuild it"
                )
        reusable = previous is not None and (
            previous.manifest.embedder == embedder.name
            and previous.manifest.chunk_size == chunking.chunk_size
            and previous.manifest.chunk_overlap == chunking.chunk_overlap
            and previous.manifest.reader_version == READER_VERSION
        )
        old_files = previous.files() if previous is not None else {}
        old_uploads = previous.uploads() if previous is not None else {}
        names = names_to_index(add, old_uploads, keep_others)
        count = tokenizer_counter(embedder.tokenizer)

        kept: list[tuple[Chunk, np.ndarray | None, str]] = []
        files: dict[str, tuple[str, str, int]] = {}
        skipped: list[tuple[str, str]] = []
        reused = indexed = 0
        if keep_others:
            gone = _matching(old_files, remove or [])
            if remove and not gone:
                raise IndexError_(f"nothing in the index matches {', '.join(remove)}: see `python -m index stats`")
            incoming = {str(p) for p in names}
            for key, info in old_files.items():
                if key in gone or key in incoming:
                    continue
                kept += [(c, v, key) for c, v in previous.stored_chunks(key)]
                files[key] = (info["source"], info["file_hash"], info["n_chunks"])
        for path in progress_bar(sorted(names), show=progress, desc="reading", unit="file"):
            key, name = str(path), names[path]
            try:
                digest = file_sha256(path)
            except OSError as exc:
                skipped.append((name, f"unreadable: {exc.strerror}"))
                if key in old_files and keep_others:  # keep what was stored rather than lose it
                    kept += [(c, v, key) for c, v in previous.stored_chunks(key)]
                    info = old_files[key]
                    files[key] = (info["source"], info["file_hash"], info["n_chunks"])
                continue
            old = old_files.get(key)
            if reusable and old is not None and old["file_hash"] == digest:
                stored = previous.stored_chunks(key)
                kept += [(c, v, key) for c, v in stored]
                files[key] = (name, digest, len(stored))
                reused += 1
                continue
            chunks = read_chunks(loader, path, name, count, chunking, digest, skipped)
            if chunks is None:
                continue
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
        kind = index_type if index_type != "auto" else ("hnsw" if len(matrix) >= HNSW_THRESHOLD else "flat")
        index = make_vector_index(matrix, kind)
        screened_by, marks, flagged = _screen(kept, previous, embedder, progress) if screen else ("", {}, [])
        bm25 = BM25Index.build([c.embed_text for c, _, _ in kept])
        removed = len(set(old_files) - set(files))
        roots = [str(Path(s).resolve()) for s in add]
        if keep_others and previous is not None:
            roots = sorted(set(previous.manifest.sources) | set(roots))
        manifest = Manifest(
            embedder=embedder.name, dimension=dimension, chunk_size=chunking.chunk_size,
            chunk_overlap=chunking.chunk_overlap, n_chunks=len(kept), n_files=len(files),
            index_type=kind, sources=roots,
            extra=extra if extra is not None else (previous.manifest.extra if previous else {}),
            screened_by=screened_by,
            # files kept from an older reader's index (an upload keeps the others) keep its number
            reader_version=(previous.manifest.reader_version if keep_others and previous is not None
                            else READER_VERSION),
        )
        records = {key: old_uploads[key] for key in files if key in old_uploads}
        records.update({key: record for key, record in (uploads or {}).items() if key in files})
        version = _write_version(root, manifest, index, bm25, kept, files, records, marks)
        if previous is not None:
            previous.close()
        _prune(root, keep={version, previous.version if previous else ""})
    return BuildReport(version=version, files_indexed=indexed, files_reused=reused, files_removed=removed,
                       chunks=len(kept), chunks_embedded=len(todo), seconds=time.time() - started,
                       skipped=skipped, quarantined=flagged)


def _screen(kept: list[tuple[Chunk, np.ndarray, str]], previous: IndexStore | None, embedder: Embedder,
            progress: bool) -> tuple[str, dict[str, list[list[float]]], list[tuple[str, str, float]]]:
    """Prompt-injection marks for the chunks of a new version: (the model's id, flagged units by content hash,
    the (source, unit, score) flagged in chunks the previous version had not screened with that model)."""
    # the assistant's safety model, imported here: documents meet it once, as they are indexed
    from assistant.compliance.injection import InjectionDetector

    detector = InjectionDetector.load(embedder)
    same_model = previous is not None and previous.manifest.screened_by == detector.id
    known = previous.quarantined() if same_model else {}
    screened = previous.content_hashes() if same_model else set()
    marks: dict[str, list[list[float]]] = {}
    todo: dict[str, Chunk] = {}
    for chunk, _, _ in kept:
        digest = chunk.content_hash
        if digest in screened:
            if digest in known:
                marks[digest] = known[digest]
        else:
            todo.setdefault(digest, chunk)
    flagged: list[tuple[str, str, float]] = []
    found = detector.screen([c.text for c in todo.values()], progress=progress)
    for (digest, chunk), flags in zip(todo.items(), found, strict=True):
        if flags:
            marks[digest] = [[f.start, f.end, f.score] for f in flags]
            flagged += [(chunk.source, f.text, f.score) for f in flags]
    return detector.id, marks, flagged


def _matching(files: dict[str, dict], wanted: list[str]) -> set[str]:
    """Stored file keys named by `wanted`: a display name, a path, or a folder above them."""
    out = set()
    for want in wanted:
        resolved = str(Path(want).expanduser().resolve())
        for key, info in files.items():
            if want in (key, info["source"]) or key == resolved or key.startswith(resolved.rstrip("/") + "/"):
                out.add(key)
    return out


def make_vector_index(matrix: np.ndarray, kind: str):
    """An exact inner-product index, or an HNSW graph over the same vectors."""
    import faiss

    dimension = matrix.shape[1]
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    else:
        index = faiss.IndexFlatIP(dimension)
    if len(matrix):
        index.add(matrix)
    return index


def _write_version(root, manifest, index, bm25, kept, files, uploads: dict[str, UploadRecord],
                   marks: dict[str, list[list[float]]]) -> str:
    import faiss

    versions = root / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    name = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    tmp = versions / f".tmp-{name}"
    tmp.mkdir()
    faiss.write_index(index, str(tmp / "vectors.faiss"))
    bm25.save(tmp / "bm25")
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
    db.executemany(f"INSERT INTO uploads ({', '.join(_UPLOAD_COLUMNS)}) VALUES ({', '.join('?' * len(_UPLOAD_COLUMNS))})",
                   [tuple(asdict(r).values()) for r in uploads.values()])
    db.executemany("INSERT INTO quarantine VALUES (?,?)", [(h, json.dumps(units)) for h, units in marks.items()])
    db.commit()
    db.close()
    (tmp / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2))
    for f in tmp.rglob("*"):
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
