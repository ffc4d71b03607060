"""The index in Milvus: chunks, dense vectors and BM25 in one collection that every worker can share.

    python -m index build SRC... --out NAME --store milvus --milvus-uri ./milvus.db        Milvus Lite (a file)
    python -m index build SRC... --out NAME --store milvus --milvus-uri http://host:19530  a Milvus server
    python -m index query NAME "TEXT" --store milvus --milvus-uri URI [--mode hybrid|dense|bm25]
    (add, remove, eval, stats take the same two flags, whose defaults are $RA_STORE and $RA_MILVUS_URI)
    python -m index build assistant/packs/bank/docs --out DATA/indexes/bank --store milvus --milvus-uri URI
        leaves DATA/indexes/bank/milvus.json: the assistant (data folder DATA) then reads the pack from Milvus

With `--store milvus` the index argument names a collection, not a directory. The same code talks to Milvus
Lite (`pymilvus[milvus_lite]`, a `.db` file, one process) and to a Milvus server through `MilvusClient`.

Collection NAME holds one entity per chunk: the chunk's fields, its dense vector (`dense`, inner product on
normalized vectors = cosine; FLAT below index.store.HNSW_THRESHOLD chunks, HNSW above, as the FAISS store) and
`sparse`, written by Milvus's own BM25 function from `search_text` (the chunk with its title and headings,
what the FAISS store's BM25 reads too), analyzed by analyzer(). Collection NAME__meta holds what a FAISS
version keeps beside its vectors, one JSON value per key: the manifest, one record per file, per upload, and
the prompt-injection marks by content hash (Milvus needs a vector field in every collection: `_v` is a
constant placeholder).

Search, per mode, is the engine's: dense = a vector search, bm25 = a BM25 search, hybrid = `hybrid_search` of
both with RANKER. Every hit's cosine is computed from its stored vector, so `min_score` means what it means on
FAISS; a hybrid hit's `bm25_score` is 0 (hybrid_search returns only the fused score). The FAISS store's
adaptive fusion is not used: it needs every chunk's BM25 score and each query term's best score, which Milvus
does not return. nDCG@10 on MedQuAD dev (13,347 chunks, 4,607 questions, the same vectors; `python -m
index.bench --store milvus`), FAISS / Milvus Lite: dense 0.9609 / 0.9613, bm25 0.9471 / 0.9555, hybrid
0.9673 / 0.9673.

Updates are incremental: unchanged files (same SHA-256) are not touched; a changed file's chunks are
replaced, and a chunk whose text, title and headings are already stored keeps its vector (no re-embedding).
On Milvus Lite an update then rewrites all rows into one segment (`_repack`: BM25 statistics are per segment
there), copying the stored vectors. New rows are inserted before old ones are deleted, so readers never see
a file vanish; unlike the FAISS version swap this is not atomic: a reader may briefly see both versions of a
changed file (identical passages are merged in results), and a crash mid-update is repaired by the next build
or add. Run one writer at a time.

Milvus Lite 3.2.2, checked here: the BM25 function, BM25 search, `hybrid_search` with RRFRanker and
WeightedRanker, HNSW and FLAT all work. Its analyzer is `\\w+` + lowercase + stop words: the `stemmer` filter
in analyzer() is accepted and ignored (a server applies it; no server was run here); `run_analyzer` and
`compact` are not implemented; BM25 statistics are per segment (hence `_repack`); a filtered BM25 search
(private uploads hidden from other sessions) takes its IDF from the rows the filter keeps; and a Lite file is
locked by the one process that opened it, so several workers sharing one index need a Milvus server. Lite runs
in Python, in-process: at 100,000 chunks its queries took 160-250 ms p50 against FAISS's 8-10 ms (`make
bench-index STORE=milvus`).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from index.bm25 import _stopwords
from index.chunk import Chunk, ChunkConfig, tokenizer_counter
from index.embed import Embedder
from index.errors import UserError
from index.ingest import READER_VERSION, load_document
from index.store import (
    FORMAT_VERSION,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    HNSW_THRESHOLD,
    INDEX_TYPES,
    BuildReport,
    IndexError_,
    Manifest,
    PrivateUploads,
    UploadRecord,
    _matching,
    _screen,
    file_sha256,
    names_to_index,
    read_chunks,
)

STORES = ("faiss", "milvus")


def analyzer() -> dict:
    """The FAISS store's BM25 words (index/bm25.py): its stopwords, lower case, English stems (on a server)."""
    return {"tokenizer": "standard",
            "filter": ["lowercase", {"type": "stop", "stop_words": sorted(_stopwords())},
                       {"type": "stemmer", "language": "english"}]}


BM25_K1, BM25_B = 1.2, 0.75  # as index/bm25.py
RANKERS = ("weighted", "rrf")
# Hybrid: Milvus's WeightedRanker (each score scaled by arctan) at 0.7 dense / 0.3 BM25. nDCG@10 on MedQuAD dev
# (4,607 questions) and on the 180 hand-written consumer messages of index/devsets, with the same vectors, 50
# candidates per retriever (the FAISS figures through the searcher):
# weighted 0.7/0.3 0.9676 / 0.9307, weighted 0.5/0.5 0.9690 / 0.9053, RRFRanker(60) 0.9676 / 0.9187; the FAISS
# store's adaptive fusion 0.9673 / 0.9403. An even mix loses most on chatty messages, as on FAISS.
RANKER = "weighted"
DENSE_WEIGHT = 0.7
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,190}$")
_BATCH = 512  # entities per insert, ids per get
_TEXT_MAX = 65535


class MilvusStoreError(IndexError_, UserError):
    """Milvus could not be reached, or holds no such index; the message says what to check."""


@dataclass(frozen=True)
class MilvusLocation:
    """Where a Milvus index lives: a server URL or a Milvus Lite `.db` file, and a collection name."""

    uri: str
    collection: str

    def __post_init__(self) -> None:
        if not self.uri:
            raise MilvusStoreError("--store milvus needs --milvus-uri (or RA_MILVUS_URI): a Milvus Lite file such "
                                   "as ./milvus.db, or a server such as http://localhost:19530")
        if "://" in self.uri:
            if not self.uri.startswith(("http://", "https://", "tcp://", "grpc://")):
                raise MilvusStoreError(f"--milvus-uri {self.uri}: use http://HOST:PORT for a Milvus server or a "
                                       "file path ending in .db for Milvus Lite")
        elif not self.uri.endswith(".db"):
            raise MilvusStoreError(f"--milvus-uri {self.uri}: a Milvus Lite database is a file whose name ends "
                                   "in .db (e.g. ./milvus.db); a server is http://HOST:PORT")
        if not _NAME.match(self.collection):
            raise MilvusStoreError(f"'{self.collection}' cannot name a Milvus collection: with --store milvus the "
                                   "index argument is a collection name (letters, digits and _, not starting "
                                   "with a digit), e.g. bank_docs")

    @property
    def lite(self) -> bool:
        """A Milvus Lite file rather than a server."""
        return "://" not in self.uri

    @property
    def meta(self) -> str:
        return f"{self.collection}__meta"

    def __str__(self) -> str:
        return f"Milvus collection '{self.collection}' at {self.uri}"


POINTER = "milvus.json"  # in an index directory: the index lives in Milvus, here


def pointed(where) -> MilvusLocation | None:
    """`where` itself when it is a MilvusLocation; the location a directory's milvus.json names; else None."""
    if isinstance(where, MilvusLocation):
        return where
    file = Path(where) / POINTER
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
        return MilvusLocation(uri=data["uri"], collection=data["collection"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MilvusStoreError(f"{file} is damaged ({exc}): rebuild with `python -m index build SRC --out {where} "
                               "--store milvus --milvus-uri URI`") from exc


def write_pointer(directory: str | Path, location: MilvusLocation) -> Path:
    """Record in `directory` that its index lives at `location`, so that commands and the assistant find it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{POINTER}.tmp"
    tmp.write_text(json.dumps({"store": "milvus", "uri": location.uri, "collection": location.collection}) + "\n")
    tmp.replace(directory / POINTER)
    return directory / POINTER


def location_for(index: str | Path, uri: str, collection: str | None = None) -> MilvusLocation:
    """The location for `--store milvus --milvus-uri URI` on the index argument INDEX: the collection is named
    after INDEX's last part (or `collection`); a Lite file's path is made absolute."""
    if uri and "://" not in uri:
        uri = str(Path(uri).expanduser().resolve())
    return MilvusLocation(uri=uri, collection=collection or collection_name(str(index)))


def collection_name(name: str) -> str:
    """A valid collection name made from a pack or directory name (bank -> bank, my-docs -> my_docs)."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", Path(name).name) or "index"
    return clean if not clean[0].isdigit() else f"_{clean}"


def milvus_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pymilvus") is not None


def _pymilvus():
    try:
        import pymilvus
    except ImportError as exc:
        raise MilvusStoreError("--store milvus needs pymilvus: pip install -e \".[milvus]\"") from exc
    import logging

    # pymilvus logs every failed call with a traceback, and Milvus Lite's in-process gRPC server each call it
    # does not implement (pymilvus then falls back): failures reach the user as one-line errors instead
    for name in ("pymilvus", "grpc._server", "milvus_lite"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return pymilvus


def _failed(location: MilvusLocation, exc: Exception, doing: str) -> MilvusStoreError:
    """One line for a failed Milvus call: what was being done, where, and what to check."""
    message = getattr(exc, "message", None) or str(exc).splitlines()[0]
    code = getattr(exc, "code", None)
    if code in (100,) or "not exist" in message or "not found" in message:
        return MilvusStoreError(f"no index in {location} ({message}): build one with `python -m index build "
                                f"SRC --store milvus --milvus-uri {location.uri} --out {location.collection}`")
    if code == 2 or "connect" in message.lower() or "unavailable" in message.lower():
        return MilvusStoreError(f"lost the connection to Milvus at {location.uri} while {doing} ({message}): "
                                "check that the server is running and reachable, then retry")
    return MilvusStoreError(f"Milvus at {location.uri} failed while {doing}: {message}")


def connect(location: MilvusLocation, timeout: float = 10.0):
    """A MilvusClient for `location`; a MilvusStoreError when the server or the Lite file cannot be opened."""
    pymilvus = _pymilvus()
    try:
        return pymilvus.MilvusClient(uri=location.uri, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - pymilvus raises several types (MilvusException, ConnectionConfigException, gRPC)
        message = getattr(exc, "message", None) or str(exc).splitlines()[0]
        if location.lite:
            raise MilvusStoreError(f"cannot connect to Milvus at {location.uri} ({message}): the file's folder must "
                                   "exist, and only one process may open a Milvus Lite file at a time (several "
                                   "workers need a Milvus server: --milvus-uri http://HOST:19530)") from exc
        raise MilvusStoreError(f"cannot connect to Milvus at {location.uri} ({message}): check the address and "
                               "that the server is running") from exc


class _Calls:
    """Every client call goes through here, so any Milvus failure becomes one MilvusStoreError."""

    def __init__(self, location: MilvusLocation, client):
        self.location, self.client = location, client

    def __call__(self, doing: str, method: str, *args, **kwargs):
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except MilvusStoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - see connect()
            raise _failed(self.location, exc, doing) from exc


_CHUNK_FIELDS = ["row", "chunk_id", "path", "source", "title", "headings", "page", "start", "end", "text",
                 "content_hash", "file_hash"]


def _scan(call: _Calls, collection: str, fields: list[str], where: str = "") -> list[dict]:
    """Every entity's `fields` matching the filter `where`, read in batches."""
    iterator = call("reading chunks", "query_iterator", collection, batch_size=2000, filter=where,
                    output_fields=fields)
    out: list[dict] = []
    try:
        while True:
            try:
                batch = iterator.next()
            except Exception as exc:  # noqa: BLE001 - see connect()
                raise _failed(call.location, exc, "reading chunks") from exc
            if not batch:
                return out
            out += batch
    finally:
        iterator.close()


def _record(entity: dict) -> dict:
    record = {k: entity.get(k) for k in _CHUNK_FIELDS}
    record["headings"] = json.loads(record["headings"] or "[]")
    return record


class MilvusStore(PrivateUploads):
    """The reading side of an index in Milvus, with the methods of index.store.IndexStore that the searcher,
    the assistant and the CLI use; `rank` searches in the engine (see the module doc)."""

    native_ranking = True  # Searcher asks the store to rank instead of fusing FAISS and bm25s itself

    def __init__(self, location: MilvusLocation, client, manifest: Manifest, version: str,
                 ranker: str = RANKER):
        if ranker not in RANKERS:
            raise MilvusStoreError(f"unknown Milvus ranker '{ranker}': choose one of {', '.join(RANKERS)}")
        self.location, self.client, self.manifest, self.version = location, client, manifest, version
        self.ranker = ranker
        self.call = _Calls(location, client)
        self._uploads: dict[str, UploadRecord] | None = None
        self._private_rows: dict[str, np.ndarray] | None = None
        self._quarantined: dict[str, list[list[float]]] | None = None
        self._hashes: set[str] | None = None
        self._db = None

    # ------------------------------------------------------------------ opening

    @classmethod
    def exists(cls, location: MilvusLocation) -> bool:
        client = connect(location)
        try:
            return bool(_Calls(location, client)("checking for the index", "has_collection", location.meta))
        finally:
            client.close()

    @classmethod
    def open(cls, location: MilvusLocation, embedder: str | None = None, client=None) -> MilvusStore:
        client = client or connect(location)
        call = _Calls(location, client)
        if not call("opening the index", "has_collection", location.meta) or not call(
                "opening the index", "has_collection", location.collection):
            raise MilvusStoreError(f"no index in {location}: build one with `python -m index build SRC --store "
                                   f"milvus --milvus-uri {location.uri} --out {location.collection}`")
        for name in (location.collection, location.meta):
            call("loading the collection", "load_collection", name)
        found = call("reading the manifest", "get", location.meta, ids=["manifest"], output_fields=["value"])
        if not found:
            raise MilvusStoreError(f"{location} has no manifest (an interrupted first build?): rebuild it with "
                                   f"`python -m index build SRC --store milvus --milvus-uri {location.uri} "
                                   f"--out {location.collection}`")
        data = json.loads(found[0]["value"])
        version = data.pop("version", "")
        manifest = Manifest(**data)
        if manifest.format_version != FORMAT_VERSION:
            raise MilvusStoreError(f"{location} has format {manifest.format_version}, this version reads "
                                   f"{FORMAT_VERSION}: rebuild it")
        if embedder is not None and embedder != manifest.embedder:
            raise MilvusStoreError(f"{location} was built with embedder '{manifest.embedder}', not '{embedder}': "
                                   f"query it with --embedder {manifest.embedder} or rebuild it")
        return cls(location, client, manifest, version)

    def live_version(self) -> str | None:
        """The version the collection holds now (another writer may have updated it since this was opened)."""
        found = self.call("reading the manifest", "get", self.location.meta, ids=["manifest"], output_fields=["value"])
        return json.loads(found[0]["value"]).get("version") if found else None

    def reopen(self, embedder: str | None = None) -> MilvusStore:
        return MilvusStore.open(self.location, embedder=embedder, client=self.client)

    def __len__(self) -> int:
        return self.manifest.n_chunks

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # ------------------------------------------------------------------ search

    def _hidden_filter(self, hidden: np.ndarray | None) -> str:
        return f"row not in [{', '.join(str(int(r)) for r in hidden)}]" if hidden is not None and len(hidden) else ""

    def _dense_params(self, depth: int) -> dict:
        params = {"metric_type": "IP"}
        if self.manifest.index_type == "hnsw":
            params["params"] = {"ef": max(128, 2 * depth)}
        return params

    def search_vectors(self, queries: np.ndarray, depth: int,
                       hidden: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the `depth` nearest chunks per query vector (rows are -1 past the end)."""
        found = self.call("searching vectors", "search", self.location.collection, data=np.asarray(queries).tolist(),
                          anns_field="dense", limit=depth, filter=self._hidden_filter(hidden),
                          search_params=self._dense_params(depth), output_fields=["row"])
        scores = np.zeros((len(queries), depth), dtype=np.float32)
        rows = np.full((len(queries), depth), -1, dtype=np.int64)
        for i, hits in enumerate(found):
            for j, hit in enumerate(hits):
                scores[i, j], rows[i, j] = hit["distance"], hit["row"]
        return scores, rows

    def rank(self, queries: list[str], vectors: np.ndarray, depth: int, mode: str,
             hidden: np.ndarray | None = None) -> list[list[tuple[int, float, float, float]]]:
        """Each query's candidates as (row, score, dense cosine, bm25), best first, ranked by Milvus:
        a vector search, a BM25 search or a hybrid_search of both (RANKER)."""
        from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

        name, where = self.location.collection, self._hidden_filter(hidden)
        data = np.asarray(vectors).tolist()
        if mode == "dense":
            found = self.call("searching vectors", "search", name, data=data, anns_field="dense", limit=depth,
                              filter=where, search_params=self._dense_params(depth), output_fields=["row"])
            return [[(h["row"], h["distance"], h["distance"], 0.0) for h in hits] for hits in found]
        bm25_params = {"metric_type": "BM25"}
        if mode == "bm25":
            found = self.call("searching BM25", "search", name, data=list(queries), anns_field="sparse", limit=depth,
                              filter=where, search_params=bm25_params, output_fields=["row", "dense"])
        else:
            requests = [AnnSearchRequest(data=data, anns_field="dense", param=self._dense_params(depth), limit=depth,
                                         expr=where or None),
                        AnnSearchRequest(data=list(queries), anns_field="sparse", param=bm25_params, limit=depth,
                                         expr=where or None)]
            ranker = WeightedRanker(DENSE_WEIGHT, 1 - DENSE_WEIGHT) if self.ranker == "weighted" else RRFRanker(60)
            found = self.call("running hybrid_search", "hybrid_search", name, requests, ranker, limit=depth,
                              output_fields=["row", "dense"])
        out = []
        for vector, hits in zip(vectors, found, strict=True):
            ranked = []
            for h in hits:
                cosine = float(np.dot(np.asarray(h["entity"]["dense"], dtype=np.float32), vector))
                # Milvus Lite reports BM25 as a negative distance (smaller is nearer), a server as the score
                score = abs(h["distance"]) if mode == "bm25" else h["distance"]
                ranked.append((int(h["row"]), float(score), cosine, float(score) if mode == "bm25" else 0.0))
            out.append(ranked)
        return out

    def cosines(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact cosine of the query with the stored vectors of `rows`."""
        if len(rows) == 0:
            return np.zeros(0, dtype=np.float32)
        vectors = self._vectors([int(r) for r in rows])
        return np.stack([vectors[int(r)] for r in rows]) @ query

    def _vectors(self, rows: list[int]) -> dict[int, np.ndarray]:
        out = {}
        for start in range(0, len(rows), _BATCH):
            for e in self.call("reading vectors", "get", self.location.collection, ids=rows[start:start + _BATCH],
                               output_fields=["row", "dense"]):
                out[int(e["row"])] = np.asarray(e["dense"], dtype=np.float32)
        return out

    # ------------------------------------------------------------------ chunks and records

    def chunks(self, rows) -> dict[int, dict]:
        rows = [int(r) for r in rows]
        out = {}
        for start in range(0, len(rows), _BATCH):
            for e in self.call("reading chunks", "get", self.location.collection, ids=rows[start:start + _BATCH],
                               output_fields=_CHUNK_FIELDS):
                out[int(e["row"])] = _record(e)
        return out

    def texts(self) -> Iterator[tuple[int, str]]:
        """(row, title, headings and text) of every chunk."""
        for e in self.scan(["row", "title", "headings", "text"]):
            yield int(e["row"]), " \n".join([e["title"] or "", *json.loads(e["headings"] or "[]"), e["text"] or ""])

    def scan(self, fields: list[str], where: str = "") -> list[dict]:
        """Every chunk's `fields` (matching the filter `where`), read in batches."""
        return _scan(self.call, self.location.collection, fields, where)

    def _meta(self, prefix: str) -> dict[str, dict]:
        found = self.scan_meta(f'key like "{prefix}%"')
        return {e["key"][len(prefix):]: json.loads(e["value"]) for e in found}

    def scan_meta(self, where: str) -> list[dict]:
        return _scan(self.call, self.location.meta, ["key", "value"], where)

    def files(self) -> dict[str, dict]:
        return self._meta("file:")

    def rows_for_path(self, path: str) -> list[int]:
        return sorted(int(e["row"]) for e in self.scan(["row"], f"path == {json.dumps(path)}"))

    def stored_chunks(self, path: str) -> list[tuple[Chunk, np.ndarray]]:
        """The chunks of one indexed file with their vectors."""
        found = self.scan([*_CHUNK_FIELDS, "dense"], f"path == {json.dumps(path)}")
        found.sort(key=lambda e: e["row"])
        return [(Chunk(text=r["text"], source=r["source"], title=r["title"], headings=r["headings"], page=r["page"],
                       start=r["start"], end=r["end"], file_hash=r["file_hash"]), np.asarray(e["dense"], np.float32))
                for e, r in ((e, _record(e)) for e in found)]

    def uploads(self) -> dict[str, UploadRecord]:
        if self._uploads is None:
            self._uploads = {key: UploadRecord(**value) for key, value in self._meta("upload:").items()}
        return self._uploads

    def quarantined(self) -> dict[str, list[list[float]]]:
        if self._quarantined is None:
            self._quarantined = self._meta("quarantine:")
        return self._quarantined

    def content_hashes(self) -> set[str]:
        if self._hashes is None:
            self._hashes = {e["content_hash"] for e in self.scan(["content_hash"])}
        return self._hashes

    @property
    def db(self):
        """The chunk table as an in-memory SQLite database (no vectors), for callers that read chunks with SQL
        (the assistant's evidence statistics and evaluation, `index quarantine`); read from Milvus on first
        use, so it costs memory in proportion to the text indexed."""
        if self._db is None:
            import sqlite3

            db = sqlite3.connect(":memory:", check_same_thread=False)
            db.execute('CREATE TABLE chunks (row INTEGER PRIMARY KEY, chunk_id TEXT, path TEXT, source TEXT, title '
                       'TEXT, headings TEXT, page INTEGER, start INTEGER, "end" INTEGER, text TEXT, content_hash '
                       'TEXT, file_hash TEXT)')
            db.executemany(f"INSERT INTO chunks VALUES ({', '.join('?' * len(_CHUNK_FIELDS))})",
                           [tuple(e.get(k) for k in _CHUNK_FIELDS) for e in self.scan(_CHUNK_FIELDS)])
            db.commit()
            self._db = db
        return self._db


# ---------------------------------------------------------------------- writing

def _create(call: _Calls, location: MilvusLocation, dimension: int, kind: str) -> None:
    from pymilvus import DataType, Function, FunctionType

    schema = call.client.create_schema(auto_id=True)
    schema.add_field("row", DataType.INT64, is_primary=True)
    for name, length in (("chunk_id", 64), ("path", 4096), ("source", 4096), ("title", 4096), ("headings", _TEXT_MAX),
                         ("text", _TEXT_MAX), ("content_hash", 64), ("file_hash", 64)):
        schema.add_field(name, DataType.VARCHAR, max_length=length)
    schema.add_field("search_text", DataType.VARCHAR, max_length=_TEXT_MAX, enable_analyzer=True,
                     analyzer_params=analyzer())
    schema.add_field("page", DataType.INT64, nullable=True)
    schema.add_field("start", DataType.INT64)
    schema.add_field("end", DataType.INT64)
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dimension)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["search_text"],
                                 output_field_names=["sparse"]))
    params = call.client.prepare_index_params()
    _dense_index(params, kind)
    params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                     params={"bm25_k1": BM25_K1, "bm25_b": BM25_B})
    call("creating the collection", "create_collection", location.collection, schema=schema, index_params=params,
         consistency_level="Strong")  # every worker reads what the last write left

    meta = call.client.create_schema(auto_id=False)
    meta.add_field("key", DataType.VARCHAR, is_primary=True, max_length=4200)
    meta.add_field("value", DataType.VARCHAR, max_length=_TEXT_MAX)
    meta.add_field("_v", DataType.FLOAT_VECTOR, dim=2)
    params = call.client.prepare_index_params()
    params.add_index("_v", index_type="FLAT", metric_type="L2")
    call("creating the collection", "create_collection", location.meta, schema=meta, index_params=params,
         consistency_level="Strong")


def _dense_index(params, kind: str) -> None:
    if kind == "hnsw":
        params.add_index("dense", index_type="HNSW", metric_type="IP",
                         params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION})
    else:
        params.add_index("dense", index_type="FLAT", metric_type="IP")


def _to_hnsw(call: _Calls, location: MilvusLocation) -> None:
    """Past HNSW_THRESHOLD chunks an `auto` index moves from exact search to an HNSW graph, as on FAISS."""
    call("rebuilding the vector index", "release_collection", location.collection)
    call("rebuilding the vector index", "drop_index", location.collection, "dense")
    params = call.client.prepare_index_params()
    _dense_index(params, "hnsw")
    call("rebuilding the vector index", "create_index", location.collection, params)
    call("rebuilding the vector index", "load_collection", location.collection)


def _repack(call: _Calls, location: MilvusLocation, progress: bool) -> None:
    """Rewrite every row into one new segment (stored vectors, nothing re-embedded): Milvus Lite 3.2.2 takes BM25
    statistics per segment (its engine/collection.py has no cross-segment statistics yet), so the rows an
    update adds would be scored against themselves alone; its compact() is a no-op. A Milvus server keeps
    collection-wide statistics."""
    from index.quiet import progress_bar

    fields = [f for f in _CHUNK_FIELDS if f != "row"] + ["search_text", "dense"]
    rows = _scan(call, location.collection, ["row", *fields])
    call("flushing", "flush", location.collection)
    for start in progress_bar(range(0, len(rows), _BATCH), show=progress, desc="repacking (Milvus Lite)",
                              unit="batch"):
        call("rewriting chunks", "insert", location.collection, [{f: e[f] for f in fields}
                                                                  for e in rows[start:start + _BATCH]])
    call("flushing", "flush", location.collection)
    ids = [int(e["row"]) for e in rows]
    for start in range(0, len(ids), _BATCH):
        call("rewriting chunks", "delete", location.collection, ids=ids[start:start + _BATCH])


def _entity(chunk: Chunk, vector: np.ndarray, key: str) -> dict:
    return {"chunk_id": chunk.chunk_id, "path": key, "source": chunk.source, "title": chunk.title,
            "headings": json.dumps(chunk.headings), "text": chunk.text, "search_text": chunk.embed_text,
            "content_hash": chunk.content_hash, "file_hash": chunk.file_hash, "page": chunk.page,
            "start": chunk.start, "end": chunk.end, "dense": np.asarray(vector, dtype=np.float32).tolist()}


def _meta_rows(items: dict[str, object]) -> list[dict]:
    return [{"key": key, "value": json.dumps(value), "_v": [0.0, 0.0]} for key, value in items.items()]


def _quoted(values) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _stored_vectors(store: MilvusStore, chunks: list[Chunk]) -> dict[str, np.ndarray]:
    """Stored vectors of chunks already in the collection, by embed text hash (text, title and headings
    all as now: what was embedded)."""
    import hashlib

    wanted = sorted({c.content_hash for c in chunks})
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(wanted), _BATCH):
        part = wanted[start:start + _BATCH]
        for e in store.scan(["text", "title", "headings", "dense"], f"content_hash in {_quoted(part)}"):
            r = _record(e)
            same = Chunk(text=r["text"], source="", title=r["title"], headings=r["headings"])
            out[hashlib.sha256(same.embed_text.encode()).hexdigest()] = np.asarray(e["dense"], np.float32)
    return out


def update(location: MilvusLocation, embedder: Embedder, chunking: ChunkConfig | None, *, add: list[str],
           keep_others: bool, remove: list[str] | None = None, progress: bool = True, extra: dict | None = None,
           index_type: str = "auto", uploads: dict[str, UploadRecord] | None = None, loader=load_document,
           screen: bool = True) -> BuildReport:
    """index.store.update_index for a Milvus collection (same arguments and report; see the module doc)."""
    import hashlib

    from index.quiet import progress_bar

    started = time.time()
    if index_type not in INDEX_TYPES:
        raise IndexError_(f"unknown index type '{index_type}': choose one of {', '.join(INDEX_TYPES)}")
    for src in add:
        if not Path(src).exists():
            raise IndexError_(f"source {src} does not exist")
    client = connect(location)
    call = _Calls(location, client)
    previous = None
    if call("checking for the index", "has_collection", location.meta):
        try:
            previous = MilvusStore.open(location, client=client)
        except MilvusStoreError:
            if keep_others:
                raise
    elif keep_others:
        raise MilvusStoreError(f"no index in {location}: create one with `python -m index build SRC --store milvus "
                               f"--milvus-uri {location.uri} --out {location.collection}`")
    if chunking is None:
        chunking = (ChunkConfig(previous.manifest.chunk_size, previous.manifest.chunk_overlap)
                    if previous else ChunkConfig())
    if previous is not None and previous.manifest.embedder != embedder.name and keep_others:
        raise IndexError_(f"{location} was built with embedder '{previous.manifest.embedder}', not "
                          f"'{embedder.name}': use --embedder {previous.manifest.embedder} or rebuild it")
    reusable = previous is not None and (previous.manifest.embedder, previous.manifest.chunk_size,
                                         previous.manifest.chunk_overlap) == (embedder.name, chunking.chunk_size,
                                                                              chunking.chunk_overlap)
    # a full build reads again the files an older reader cut (an upload, which keeps the others, does not)
    reusable = reusable and (keep_others or previous.manifest.reader_version == READER_VERSION)
    old_uploads = previous.uploads() if previous is not None else {}
    if not reusable:  # a first build, or a rebuild with another embedder or chunking: start afresh
        for name in (location.collection, location.meta):
            if call("checking for the index", "has_collection", name):
                call("dropping the old index", "drop_collection", name)
        previous = None
        kind = index_type if index_type != "auto" else "flat"  # grows into HNSW past the threshold (below)
        _create(call, location, embedder.dimension, kind)
        for name in (location.collection, location.meta):
            call("loading the collection", "load_collection", name)
    else:
        kind = previous.manifest.index_type

    old_files = previous.files() if previous is not None else {}
    names = names_to_index(add, old_uploads, keep_others)
    incoming = {str(p) for p in names}
    if keep_others:
        gone = _matching(old_files, remove or [])
        if remove and not gone:
            raise IndexError_(f"nothing in the index matches {', '.join(remove)}: see `python -m index stats`")
    else:
        gone = set(old_files) - incoming
    gone -= incoming
    count = tokenizer_counter(embedder.tokenizer)
    files = {key: info for key, info in old_files.items() if key not in gone}
    fresh: list[tuple[Chunk, str]] = []
    replaced: set[str] = set()
    skipped: list[tuple[str, str]] = []
    reused = indexed = 0
    for path in progress_bar(sorted(names), show=progress, desc="reading", unit="file"):
        key, name = str(path), names[path]
        try:
            digest = file_sha256(path)
        except OSError as exc:  # keep what was stored rather than lose it
            skipped.append((name, f"unreadable: {exc.strerror}"))
            continue
        old = old_files.get(key)
        if old is not None and old["file_hash"] == digest and old["source"] == name:
            reused += 1
            continue
        if old is not None:
            replaced.add(key)
            files.pop(key, None)
        chunks = read_chunks(loader, path, name, count, chunking, digest, skipped)
        if chunks is None:
            continue
        fresh += [(c, key) for c in chunks]
        files[key] = {"source": name, "file_hash": digest, "n_chunks": len(chunks)}
        indexed += 1

    def embed_key(chunk: Chunk) -> str:
        return hashlib.sha256(chunk.embed_text.encode()).hexdigest()

    stored = _stored_vectors(previous, [c for c, _ in fresh]) if previous is not None and fresh else {}
    vectors: list[np.ndarray | None] = [stored.get(embed_key(c)) for c, _ in fresh]
    todo = [i for i, v in enumerate(vectors) if v is None]
    if todo:
        for i, vec in zip(todo, embedder.encode([fresh[i][0].embed_text for i in todo], progress=progress),
                          strict=True):
            vectors[i] = vec
    screened_by, marks, flagged = "", {}, []
    if screen:
        screened_by, marks, flagged = _screen_new(previous, fresh, vectors, embedder, progress)

    old_rows = [int(e["row"]) for e in previous.scan(["row"], f"path in {_quoted(sorted(gone | replaced))}")] \
        if previous is not None and (gone or replaced) else []
    entities = [_entity(c, v, key) for (c, key), v in zip(fresh, vectors, strict=True)]
    for start in progress_bar(range(0, len(entities), _BATCH), show=progress and bool(entities), desc="writing",
                              unit="batch"):
        call("writing chunks", "insert", location.collection, entities[start:start + _BATCH])
    dropped_hashes: set[str] = set()
    for start in range(0, len(old_rows), _BATCH):
        part = old_rows[start:start + _BATCH]
        dropped_hashes |= {e["content_hash"] for e in previous.chunks(part).values()}
        call("deleting replaced chunks", "delete", location.collection, ids=part)
    if location.lite and previous is not None and (entities or old_rows):
        _repack(call, location, progress)

    # the records beside the chunks: files, uploads, injection marks, and the manifest last
    records = {key: old_uploads[key] for key in files if key in old_uploads}
    records.update({key: record for key, record in (uploads or {}).items() if key in files})
    stale = [f"file:{k}" for k in old_files if k not in files]
    stale += [f"upload:{k}" for k in old_uploads if k not in records]
    if dropped_hashes:
        still = {e["content_hash"] for e in _scan(call, location.collection, ["content_hash"],
                                                  f"content_hash in {_quoted(sorted(dropped_hashes))}")}
        stale += [f"quarantine:{h}" for h in dropped_hashes - still]
    if previous is not None and (not screen or previous.manifest.screened_by != screened_by):  # marks of another model
        stale += [f"quarantine:{h}" for h in previous.quarantined() if h not in marks]
    if stale:
        for start in range(0, len(stale), _BATCH):
            call("updating index records", "delete", location.meta, ids=stale[start:start + _BATCH])
    upserts = {f"file:{k}": v for k, v in files.items() if old_files.get(k) != v}
    upserts.update({f"upload:{k}": asdict(r) for k, r in records.items()})
    upserts.update({f"quarantine:{h}": m for h, m in marks.items()})
    rows = _meta_rows(upserts)
    for start in range(0, len(rows), _BATCH):
        call("updating index records", "upsert", location.meta, rows[start:start + _BATCH])
    n_chunks = int(call("counting chunks", "query", location.collection, filter="",
                        output_fields=["count(*)"])[0]["count(*)"])
    if index_type == "auto" and kind == "flat" and n_chunks >= HNSW_THRESHOLD:
        _to_hnsw(call, location)
        kind = "hnsw"
    roots = [str(Path(s).resolve()) for s in add]
    if keep_others and previous is not None:
        roots = sorted(set(previous.manifest.sources) | set(roots))
    manifest = Manifest(embedder=embedder.name, dimension=embedder.dimension, chunk_size=chunking.chunk_size,
                        chunk_overlap=chunking.chunk_overlap, n_chunks=n_chunks, n_files=len(files), index_type=kind,
                        sources=roots, extra=extra if extra is not None else (previous.manifest.extra if previous else {}),
                        screened_by=screened_by,
                        reader_version=(previous.manifest.reader_version if keep_others and previous is not None
                                        else READER_VERSION))
    version = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    call("writing the manifest", "upsert", location.meta, _meta_rows({"manifest": {**asdict(manifest),
                                                                                   "version": version}}))
    call("flushing", "flush", location.collection)
    call("flushing", "flush", location.meta)
    client.close()
    return BuildReport(version=version, files_indexed=indexed, files_reused=reused,
                       files_removed=len(set(old_files) - set(files)), chunks=n_chunks, chunks_embedded=len(todo),
                       seconds=time.time() - started, skipped=skipped, quarantined=flagged)


def write_all(location: MilvusLocation, kept: list[tuple[Chunk, np.ndarray, str]], manifest: Manifest, *,
              files: dict[str, dict] | None = None, uploads: dict[str, UploadRecord] | None = None,
              marks: dict[str, list[list[float]]] | None = None, progress: bool = False) -> str:
    """Write a whole index whose vectors are already known into a new collection (replacing one of that name):
    (chunk, vector, file key) rows, and the records a build keeps beside them. Returns the version."""
    from index.quiet import progress_bar

    client = connect(location)
    call = _Calls(location, client)
    for name in (location.collection, location.meta):
        if call("checking for the index", "has_collection", name):
            call("dropping the old index", "drop_collection", name)
    _create(call, location, manifest.dimension, manifest.index_type)
    for name in (location.collection, location.meta):
        call("loading the collection", "load_collection", name)
    for start in progress_bar(range(0, len(kept), _BATCH), show=progress, desc="writing", unit="batch"):
        call("writing chunks", "insert", location.collection,
             [_entity(c, v, key) for c, v, key in kept[start:start + _BATCH]])
    version = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    records = {f"file:{k}": v for k, v in (files or {}).items()}
    records.update({f"upload:{k}": asdict(r) for k, r in (uploads or {}).items()})
    records.update({f"quarantine:{h}": m for h, m in (marks or {}).items()})
    records["manifest"] = {**asdict(manifest), "n_chunks": len(kept), "version": version}
    rows = _meta_rows(records)
    for start in range(0, len(rows), _BATCH):
        call("writing index records", "upsert", location.meta, rows[start:start + _BATCH])
    for name in (location.collection, location.meta):
        call("flushing", "flush", name)
    client.close()
    return version


def copy_from(store, location: MilvusLocation, progress: bool = False) -> str:
    """Copy a FAISS index (an index.store.IndexStore) into a Milvus collection, vectors and all: nothing is
    re-embedded. A way to move an index over, and how the bench compares both stores on the same vectors."""
    files = store.files()
    kept = [(chunk, vector, key) for key in files for chunk, vector in store.stored_chunks(key)]
    return write_all(location, kept, store.manifest, files=files, uploads=store.uploads(),
                     marks=store.quarantined(), progress=progress)


def _screen_new(previous: MilvusStore | None, fresh: list[tuple[Chunk, str]], vectors, embedder: Embedder,
                progress: bool):
    """Injection marks for the new chunks (index.store._screen); every stored chunk's too when the collection
    was screened by another detector, or not at all."""
    kept = [(c, v, key) for (c, key), v in zip(fresh, vectors, strict=True)]
    screened_by, marks, flagged = _screen(kept, previous, embedder, progress)
    if previous is not None and previous.manifest.screened_by != screened_by:
        kept += [(Chunk(text=e["text"], source=e["source"], title=""), None, "")
                 for e in previous.scan(["text", "source"])]
        screened_by, marks, flagged = _screen(kept, previous, embedder, progress)
    return screened_by, marks, flagged
