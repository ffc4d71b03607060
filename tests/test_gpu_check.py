"""The GPU check's payload and script (issue 17), rehearsed on the CPU: the bundled model cut into pieces
that each fit one transfer, staged call by call, joined and checked, then every step of
finetune/gpu_check.sh run small with `--device cpu`, as on the GPU machine but for the sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.gpu_payload import MIB, PayloadError, make_payload, pack_calls
from tests.conftest import ROOT

SCRIPT = ROOT / "finetune" / "gpu_check.sh"


def _script(*args: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout)


def test_calls_are_packed_within_the_budget(tmp_path):
    files = []
    for name, size in (("a", 30), ("b", 20), ("c", 25), ("d", 5)):
        path = tmp_path / name
        path.write_bytes(b"x" * size)
        files.append(("k", path))
    where = pack_calls(files, 50, tmp_path / "out")
    used: dict[str, int] = {}
    for place in where.values():
        used[place.split("/")[0]] = used.get(place.split("/")[0], 0) + (tmp_path / "out" / place).stat().st_size
    assert sorted(where) == ["a", "b", "c", "d"] and max(used.values()) <= 50 and len(used) == 2
    big = tmp_path / "big"
    big.write_bytes(b"x" * 60)
    with pytest.raises(PayloadError, match="larger than one call's budget"):
        pack_calls([("k", big)], 50, tmp_path / "out2")


def test_the_gpu_check_rehearsed_on_cpu(tmp_path):
    """Payload in three calls of at most 40 MiB; a run with a call missing says which; staged whole, every
    step runs and writes what the device tool brings back (at most 8 files)."""
    data = tmp_path / "medquad_sft"
    data.mkdir()
    rows = [{"messages": [{"role": "user", "content": f"What is the Zephyr code {i}?"},
                          {"role": "assistant", "content": f"The Zephyr code {i} is 73{i}."}]} for i in range(8)] * 2
    for name in ("train.jsonl", "valid.jsonl"):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = tmp_path / "payload-src"
    manifest = make_payload(source, budget_mib=40, data=data, wheels=())
    assert len(manifest["calls"]) == 3 and len(manifest["model"]["pieces"]) == 3
    for call in manifest["calls"]:
        size = sum(f.stat().st_size for f in (source / call).rglob("*") if f.is_file())
        assert size <= 40 * MIB and (source / call / "manifest.json").exists()

    payload, out = tmp_path / "payload", tmp_path / "out"
    env = {"PAYLOAD": str(payload), "OUT": str(out), "GPU_PYTHON": sys.executable,
           "GPU_CHECK_TRAIN_FILE": str(data / "train.jsonl"),
           # the joined model's conversion (half a GB) goes with the test's folder, not into the user's cache
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    partial = tmp_path / "partial"
    (partial / "c1").mkdir(parents=True)
    subprocess.run(["cp", "-r", str(source / "c1"), str(partial)], check=True)
    staged = _script("stage", env={**env, "GPU_PAYLOAD_SOURCE": str(partial)})
    assert staged.returncode == 0 and "staged" in staged.stdout
    early = _script("run", "--device", "cpu", env=env)
    assert early.returncode == 3 and "payload incomplete" in early.stdout + early.stderr
    assert "stage c2, c3 first" in early.stdout + early.stderr

    staged = _script("stage", env={**env, "GPU_PAYLOAD_SOURCE": str(source)})
    assert staged.returncode == 0, staged.stdout + staged.stderr
    done = _script("run", "--device", "cpu", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "payload ready" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert {k: v["exit"] for k, v in summary.items() if k != "device"} == {
        "gpu_tests": 0, "bench_finetune": 0, "bench_generate": 0, "adapter_answers": 0}
    finetune = json.loads((out / "finetune.json").read_text())
    # bench-finetune's rows, run small on CPU (float32 only): what the GPU run will print and save
    runs = finetune["runs"]
    assert set(runs) == {"plain_float32", "ours_float32_packed"}
    assert all(r["tokens_per_s"] > 0 and r["mfu"] is None and r["peak_gib"] is None for r in runs.values())
    assert "padded batches" in runs["plain_float32"]["setup"] and "LoRA" in runs["ours_float32_packed"]["setup"]
    assert "| ours_float32_packed |" in (out / "bench_finetune.log").read_text()
    assert finetune["quality"]["eval_loss_after"] < finetune["quality"]["eval_loss_before"]
    generate = json.loads((out / "generate.json").read_text())
    assert any("transformers" in name and "skipped" not in r for name, r in generate["results"].items())
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len([f for f in Path(out).iterdir() if f.is_file()]) <= 8
    joined = payload / manifest["model"]["name"]
    assert joined.stat().st_size == manifest["model"]["bytes"]
