"""Build and query document indexes.

    python -m index build assistant/packs/bank/docs --out /tmp/bank-index [--embedder bundled]
                          [--chunk-size 200] [--chunk-overlap 40]
    python -m index query /tmp/bank-index "how much is an international wire?" [-k 5] [--json]
    python -m index stats /tmp/bank-index
"""

from __future__ import annotations

import argparse
import json
import sys

from index.chunk import ChunkConfig
from index.embed import ModelSpecError, resolve_embedder
from index.search import Searcher
from index.store import IndexError_, IndexStore, build_index


def cmd_build(args: argparse.Namespace) -> int:
    chunking = ChunkConfig(chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)
    embedder = resolve_embedder(args.embedder)
    report = build_index(args.sources, args.out, embedder, chunking, progress=not args.quiet)
    print(report.summary())
    return 1 if report.skipped else 0


def cmd_query(args: argparse.Namespace) -> int:
    store = IndexStore.open(args.index)
    searcher = Searcher(store, resolve_embedder(args.embedder or store.manifest.embedder))
    hits = searcher.search(args.text, k=args.k, min_score=args.min_score)
    if args.json:
        print(json.dumps({"query": args.text, "hits": [h.to_dict() for h in hits]}, ensure_ascii=False))
        return 0
    if not hits:
        print("no relevant passages")
    for rank, hit in enumerate(hits, start=1):
        where = f" p.{hit.page}" if hit.page else ""
        snippet = " ".join(hit.text.split())[:160]
        print(f"{rank:>2}. {hit.score:.3f}  {hit.source}{where}  {hit.title}\n    {snippet}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    store = IndexStore.open(args.index)
    m = store.manifest
    info = {"version": store.version, "embedder": m.embedder, "dimension": m.dimension,
            "chunks": m.n_chunks, "files": m.n_files, "chunk_size": m.chunk_size,
            "chunk_overlap": m.chunk_overlap, "index_type": m.index_type}
    print(json.dumps(info, indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m index", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="index files and folders (incremental: unchanged files are reused)")
    b.add_argument("sources", nargs="+", help="files or directories (recursive)")
    b.add_argument("--out", required=True, help="index directory")
    b.add_argument("--embedder", default="bundled", help="`bundled`, a local directory or a Hugging Face id")
    b.add_argument("--chunk-size", type=int, default=ChunkConfig.chunk_size, help="tokens per chunk")
    b.add_argument("--chunk-overlap", type=int, default=ChunkConfig.chunk_overlap, help="tokens shared by neighbours")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_build)
    q = sub.add_parser("query", help="search an index")
    q.add_argument("index")
    q.add_argument("text")
    q.add_argument("-k", type=int, default=5)
    q.add_argument("--min-score", type=float, default=0.0, help="drop hits below this cosine score")
    q.add_argument("--embedder", default=None, help="defaults to the one the index was built with")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_query)
    s = sub.add_parser("stats", help="what an index holds")
    s.add_argument("index")
    s.set_defaults(func=cmd_stats)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ModelSpecError, IndexError_, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
