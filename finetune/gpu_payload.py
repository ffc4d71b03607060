"""`make gpu-payload`: what the GPU machine lacks, cut into pieces that each fit one transfer.

    python -m finetune.gpu_payload [--out .gpu] [--budget-mib 58]

The GPU machine (the `device` tool) has no network and takes at most 64 MiB of working tree a call, the
repository included. It has Python 3.12 with torch, transformers, peft and accelerate, but not the
bundled model's wheel, bitsandbytes, gguf, the redaction libraries the assistant imports, or
../shared/data. This writes, under `--out`:

- `c1/`, `c2/`, ...: one folder per call, each at most `--budget-mib`: the wheels (for CPython 3.12 on
  manylinux x86-64, at the versions this environment runs: transformers and peft too, so the GPU runs the
  code as tested here), the bundled GGUF in pieces, and ../shared/data/medquad_sft;
- `manifest.json`: every file's piece list and SHA-256, which `finetune/gpu_check.sh run` checks.

Then, on the GPU machine, one `run` call per folder, back to back while the machine stays warm:
`bash finetune/gpu_check.sh stage` with `carry: [".gpu/cN"]`, and last `bash finetune/gpu_check.sh run`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from finetune.train import SHARED_MEDQUAD
from index.errors import UserError

MIB = 2**20
# what the GPU machine's image lacks, pinned to the versions this environment runs (regex: transformers checks
# its version when imported, and the image's may be older)
WHEELS = ("bitsandbytes", "gguf", "phonenumbers", "python-stdnum", "transformers", "peft", "regex")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


class PayloadError(UserError):
    """The payload cannot be made as asked; the message says why."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheels(dest: Path, names: tuple[str, ...] = WHEELS) -> list[Path]:
    """Each package's wheel for CPython 3.12 on manylinux x86-64, at this environment's version."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            raise PayloadError(f"{name} is not installed here: run `make install` first") from None
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", *sum((["--platform", p] for p in PLATFORMS), []), "-d", str(dest), *pins]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise PayloadError(f"pip could not download {' '.join(pins)} for the GPU machine: "
                           f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}")
    return sorted(dest.glob("*.whl"))


def split(path: Path, size: int, dest: Path) -> list[Path]:
    """`path` cut into pieces of at most `size` bytes, named NAME.part0, NAME.part1, ..."""
    pieces = []
    with path.open("rb") as f:
        for n, block in enumerate(iter(lambda: f.read(size), b"")):
            piece = dest / f"{path.name}.part{n}"
            piece.write_bytes(block)
            pieces.append(piece)
    return pieces


def pack_calls(items: list[tuple[str, Path]], budget: int, out: Path) -> dict[str, str]:
    """Move (kind, file) items into c1/, c2/, ... each holding at most `budget` bytes (largest first, into the
    first folder with room); returns each file's folder."""
    folders: list[int] = []
    where: dict[str, str] = {}
    for kind, path in sorted(items, key=lambda item: -item[1].stat().st_size):
        size = path.stat().st_size
        if size > budget:
            raise PayloadError(f"{path.name} ({size / MIB:.1f} MiB) is larger than one call's budget "
                               f"({budget / MIB:.0f} MiB)")
        n = next((i for i, used in enumerate(folders) if used + size <= budget), None)
        if n is None:
            folders.append(0)
            n = len(folders) - 1
        folders[n] += size
        target = out / f"c{n + 1}" / kind
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), target / path.name)
        where[path.name] = f"c{n + 1}/{kind}/{path.name}"
    return where


def make_payload(out: Path, budget_mib: float = 58, model: Path | None = None, data: Path | None = SHARED_MEDQUAD,
                 wheels: tuple[str, ...] = WHEELS) -> dict:
    """Write the payload under `out` (emptied first) and return its manifest."""
    from assistant.llm.models import bundled_gguf

    budget = int(budget_mib * MIB)
    if out.exists():
        shutil.rmtree(out)
    work = out / "work"
    work.mkdir(parents=True)
    items: list[tuple[str, Path]] = []
    manifest: dict = {"budget_mib": budget_mib, "wheels": [], "model": None, "data": []}
    for wheel in download_wheels(work / "whl", wheels) if wheels else []:
        items.append(("whl", wheel))
        manifest["wheels"].append(wheel.name)
    model = model or bundled_gguf()
    pieces = split(model, budget - MIB, work)  # a MiB of room in each call for the smaller files
    manifest["model"] = {"name": model.name, "sha256": sha256(model), "bytes": model.stat().st_size,
                         "pieces": [p.name for p in pieces]}
    items += [("model", p) for p in pieces]
    if data is not None:
        if not (data / "train.jsonl").exists():
            raise PayloadError(f"no {data / 'train.jsonl'}: the medquad epoch needs ../shared/data/medquad_sft")
        for name in ("train.jsonl", "valid.jsonl"):
            copy = work / name
            shutil.copyfile(data / name, copy)
            manifest["data"].append({"name": name, "sha256": sha256(copy)})
            items.append(("medquad_sft", copy))
    manifest["files"] = pack_calls(items, budget, out)
    manifest["calls"] = sorted({f.split("/")[0] for f in manifest["files"].values()}, key=lambda c: int(c[1:]))
    shutil.rmtree(work)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    for call in manifest["calls"]:  # each call carries the manifest, so any call can tell what is missing
        shutil.copyfile(out / "manifest.json", out / call / "manifest.json")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m finetune.gpu_payload", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(".gpu"))
    p.add_argument("--budget-mib", type=float, default=58,
                   help="most MiB one call carries (64 MiB a call, less the repository's own files: about 4)")
    p.add_argument("--model", type=Path, default=None, help="a GGUF instead of the bundled model")
    p.add_argument("--data", type=Path, default=SHARED_MEDQUAD, help="the medquad_sft folder")
    p.add_argument("--no-data", action="store_true", help="leave the medquad data out")
    p.add_argument("--no-wheels", action="store_true", help="leave the wheels out (for a rehearsal on this machine)")
    args = p.parse_args(argv)
    try:
        manifest = make_payload(args.out, args.budget_mib, args.model, None if args.no_data else args.data,
                                () if args.no_wheels else WHEELS)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for call in manifest["calls"]:
        size = sum(f.stat().st_size for f in (args.out / call).rglob("*") if f.is_file())
        print(f"{args.out / call}: {size / MIB:.1f} MiB")
    print(f"then on the GPU machine, back to back: one `bash finetune/gpu_check.sh stage` per folder "
          f"(carry: [\"{args.out}/cN\"]), then `bash finetune/gpu_check.sh run`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
