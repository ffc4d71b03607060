"""Uploads that cannot hurt: parsed in isolation, attributed, private to their session until approved.

    from index.uploads import Uploader, add_uploads, approve_uploads
    report = add_uploads(index_dir, shared_root, paths, embedder, Uploader(user="alice", session=sid))
    searcher.search("fees", session=sid)              # the uploader finds it; other sessions do not
    approve_uploads(index_dir, [report.records[0].id], embedder, by="admin")   # now everyone does

    python -m index uploads DIR                       # every upload: who, when, private or shared
    python -m index approve DIR ID... --by NAME       # into the shared index (audited)
    python -m index reject DIR ID... --by NAME        # dropped from the index, its file deleted

Every file is parsed first, in a child process under a memory cap and a timeout (index/sandbox.py),
within IngestLimits; a refused file is reported with the limit it crossed and never reaches the index.
Sentences that address the assistant (prompt injection) are marked as the file is indexed and listed in
`UploadReport.quarantined`; they are never quoted as evidence (index/store.py, assistant/compliance/injection.py).
Accepted files are written as a new index version, so nothing already stored is lost whatever happens.

Where files are kept. `shared_root` is the pack's uploads folder (`DATA/uploads/<pack>`): shared uploads
are `shared_root/uploads/NAME`, indexed with the pack's documents whenever the index is rebuilt. A private
upload is kept apart, in `DATA/uploads/.private/<pack>/<session digest>/uploads/NAME`: a hidden folder
that no folder build reads, so it cannot become shared by accident; its record in the index (table
`uploads`, index/store.py) makes searches skip it for every other session. Approval moves the file into
`shared_root/uploads/` and re-indexes it as shared. `UploadSettings(private=False)` restores the old
behaviour: uploads are shared at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from index.embed import Embedder
from index.ingest import Document, IngestError, load_document
from index.limits import IngestLimits
from index.sandbox import ParserSandbox
from index.store import IndexError_, IndexStore, UploadRecord, file_sha256, update_index


@dataclass
class UploadSettings:
    """How uploads are taken in; the UI's `--shared-uploads` and `--upload-limit` set these."""

    private: bool = True  # searched only by the uploader's session until an administrator approves them
    isolate: bool = True  # parse in a child process (memory cap, timeout, the server's GIL left free)
    limits: IngestLimits = field(default_factory=IngestLimits)


@dataclass
class Uploader:
    """Who is uploading: the login name when logins are on, and the session (browser tab or API caller)."""

    user: str | None = None
    session: str | None = None


@dataclass
class UploadReport:
    """What an upload did: files added to the index, and files refused with the reason."""

    added: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 0  # chunks in the index afterwards
    seconds: float = 0.0
    private: bool = False  # the added files wait for an administrator's approval
    records: list[UploadRecord] = field(default_factory=list)  # one per added file
    quarantined: list[tuple[str, str, float]] = field(default_factory=list)  # (source, sentence, score): injection


def upload_name(name: str) -> str:
    """A safe file name for an upload: no folders, no leading dots, only ordinary characters."""
    stem = re.sub(r"[^A-Za-z0-9._ -]+", "_", Path(name).name).strip(" .") or "document"
    return stem[:120]


def private_root(shared_root: Path, session: str) -> Path:
    """Where one session's uploads wait for approval (hidden: folder builds never read it)."""
    digest = hashlib.sha256(session.encode()).hexdigest()[:16]
    return Path(shared_root).parent / ".private" / Path(shared_root).name / digest


@contextlib.contextmanager
def _parser(settings: UploadSettings) -> Iterator[Callable[[Path], Document]]:
    if not settings.isolate:
        yield lambda path: load_document(path, settings.limits)
        return
    with ParserSandbox(settings.limits) as sandbox:
        yield sandbox.load


def add_uploads(index_dir: str | Path, shared_root: str | Path, paths: list[str | Path], embedder: Embedder,
                uploader: Uploader, settings: UploadSettings | None = None, *,
                progress: bool = False) -> UploadReport:
    """Parse, keep and index uploaded files for `uploader`; private to their session unless `settings`
    says otherwise. Raises IndexError_ when the index is missing, ValueError when a private upload has
    no session to belong to."""
    settings = settings or UploadSettings()
    if settings.private and not uploader.session:
        raise ValueError("a private upload belongs to a session: give Uploader(session=...) or share uploads "
                         "at once (UploadSettings(private=False))")
    if not IndexStore.exists(index_dir):
        raise IndexError_(f"no index at {index_dir}: the pack's index is built when the assistant starts")
    started = time.perf_counter()
    shared_root = Path(shared_root)
    report = UploadReport(private=settings.private)
    home = private_root(shared_root, uploader.session) if settings.private else shared_root
    with _parser(settings) as parse:
        accepted: dict[str, tuple[Path, Document]] = {}
        for raw in paths:
            path = Path(raw)
            name = upload_name(path.name)
            try:
                doc = parse(path)
            except IngestError as exc:
                report.rejected.append((path.name, str(exc)))
                continue
            if name in accepted:
                report.rejected.append((path.name, f"another file in this upload is also named {name}"))
                continue
            accepted[name] = (path, doc)
        if accepted:
            records = _keep(home, shared_root, accepted, uploader, settings, parse, index_dir, embedder,
                            progress, report)
            report.records = records
            report.added = [Path(r.source).name for r in records]
    if not report.chunks:
        with contextlib.closing(IndexStore.open(index_dir)) as store:
            report.chunks = len(store)
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _keep(home: Path, shared_root: Path, accepted: dict[str, tuple[Path, Document]], uploader: Uploader,
          settings: UploadSettings, parse: Callable[[Path], Document], index_dir, embedder, progress: bool,
          report: UploadReport) -> list[UploadRecord]:
    """Copy the accepted files under `home` and index them; on any failure the folder and the index are
    left as they were."""
    folder = home / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    docs: dict[str, Document] = {}
    records: dict[str, UploadRecord] = {}
    with _swap_files() as swap:
        for name, (path, doc) in accepted.items():
            target = folder / name
            swap(target, lambda tmp, src=path: shutil.copyfile(src, tmp))
            key = str(target.resolve())
            docs[key] = doc
            records[key] = UploadRecord(
                path=key, source=f"uploads/{name}", user=uploader.user, session=uploader.session,
                uploaded_at=time.time(), status="private" if settings.private else "shared",
                sha256=file_sha256(target), size=target.stat().st_size, shared_root=str(shared_root.resolve()))
        result = update_index(index_dir, embedder, None, add=[str(home)], keep_others=True, uploads=records,
                              loader=lambda p: docs[str(p)] if str(p) in docs else parse(p), progress=progress)
    report.chunks = result.chunks
    report.quarantined = result.quarantined
    report.rejected += [(name, reason) for name, reason in result.skipped]  # files of earlier uploads, re-read
    return list(records.values())


@contextlib.contextmanager
def _swap_files():
    """Replace files so that all the replacements can be undone: yields `swap(target, write)`, where
    `write(tmp)` writes the new content; if the block raises, every target gets its old content back."""
    done: list[tuple[Path, Path | None]] = []

    def swap(target: Path, write: Callable[[Path], None]) -> None:
        tmp = target.with_name(f".{target.name}.part")
        write(tmp)
        backup = None
        if target.exists():
            backup = target.with_name(f".{target.name}.previous")
            os.replace(target, backup)
        os.replace(tmp, target)
        done.append((target, backup))

    try:
        yield swap
    except BaseException:
        for target, backup in reversed(done):
            if backup is not None:
                os.replace(backup, target)
            else:
                target.unlink(missing_ok=True)
        raise
    for _, backup in done:
        if backup is not None:
            backup.unlink(missing_ok=True)


def list_uploads(index_dir: str | Path) -> list[UploadRecord]:
    """Every upload the index holds, oldest first."""
    with contextlib.closing(IndexStore.open(index_dir)) as store:
        return sorted(store.uploads().values(), key=lambda r: r.uploaded_at)


def select_uploads(records: list[UploadRecord], handles: list[str], status: str) -> list[UploadRecord]:
    """The records named by id (or its first 4+ characters), by source (uploads/NAME) or by file name."""
    pool = [r for r in records if r.status == status]
    chosen: dict[str, UploadRecord] = {}
    for handle in handles:
        found = [r for r in pool if (len(handle) >= 4 and r.id.startswith(handle)) or handle in (r.source, Path(r.source).name)]
        if not found:
            raise IndexError_(f"no {status} upload matches '{handle}': see `python -m index uploads DIR`")
        if len(found) > 1:
            ids = ", ".join(f"{r.id} ({r.source}, {r.user or r.session})" for r in found)
            raise IndexError_(f"'{handle}' matches several {status} uploads: name one by id: {ids}")
        chosen[found[0].path] = found[0]
    return list(chosen.values())


def approve_uploads(index_dir: str | Path, handles: list[str], embedder: Embedder, by: str,
                    settings: UploadSettings | None = None, *, replace_shared: bool = False) -> list[UploadRecord]:
    """Move private uploads into the shared index; returns their new records (approved_by, approved_at).

    A shared upload of the same name is replaced only with `replace_shared`. On any failure the files and
    the index are left as they were.
    """
    settings = settings or UploadSettings()
    chosen = select_uploads(list_uploads(index_dir), handles, "private")
    plans = []
    for record in chosen:
        source, target = Path(record.path), Path(record.shared_root) / record.source
        if not source.is_file():
            raise IndexError_(f"{record.source} ({record.id}): its file {source} is missing; reject it instead")
        if target.exists() and not replace_shared:
            raise IndexError_(f"{record.source} ({record.id}): a shared document of that name exists; "
                              "approve with --replace to replace it, or remove that one first")
        plans.append((record, source, target))
    now = time.time()
    approved: dict[str, UploadRecord] = {}
    with _parser(settings) as parse, _swap_files() as swap:
        for record, source, target in plans:
            target.parent.mkdir(parents=True, exist_ok=True)
            swap(target, lambda tmp, src=source: shutil.copyfile(src, tmp))
            key = str(target.resolve())
            approved[key] = replace(record, path=key, status="shared", approved_by=by, approved_at=now)
        roots = sorted({r.shared_root for r, _, _ in plans})
        update_index(index_dir, embedder, None, add=roots, keep_others=True, remove=[r.path for r in chosen],
                     uploads=approved, loader=parse, progress=False)
    for _, source, _ in plans:  # the index no longer holds the private copies
        source.unlink(missing_ok=True)
    return list(approved.values())


def reject_uploads(index_dir: str | Path, handles: list[str], embedder: Embedder) -> list[UploadRecord]:
    """Drop private uploads from the index and delete their files; returns the records dropped."""
    chosen = select_uploads(list_uploads(index_dir), handles, "private")
    update_index(index_dir, embedder, None, add=[], keep_others=True, remove=[r.path for r in chosen],
                 progress=False)
    for record in chosen:
        Path(record.path).unlink(missing_ok=True)
    return chosen
