"""`make bench-finetune`: training throughput and memory on one GPU, ours against a plain loop, side by side.

    python -m finetune.bench [--steps 30] [--quality] [--json runs/finetune-bench.json]

Baselines (the same model, data and LoRA settings): a plain transformers + peft loop as the peft docs
write it (prepare_model_for_kbit_training, gradient checkpointing), batch 16 padded to the longest
example, no packing, the model's own loss over the whole vocabulary, in 4-bit and in bf16. Ours:
`finetune.train` with the medquad_gpu config: packing (16 x 1,024 tokens a step), the loss on answer
tokens in chunks, bf16 autocast. Reported: tokens/s (real tokens, padding excluded, warm-up steps
excluded), peak GPU memory, model FLOPs utilisation, and the ratio to the 4-bit baseline. `--quality`
also runs one epoch of medquad_sft and reports the eval loss before and after. Needs CUDA and
../shared/data/medquad_sft; says so otherwise.

`--device cpu` runs the same code small (float32 LoRA rows only, no 4-bit) to check it end to end
without a GPU, e.g. `--device cpu --steps 2 --batch-size 2 --max-length 128 --train-file F`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from finetune.config import load_config
from finetune.train import SHARED_MEDQUAD, count_parameters, mfu, train

WARMUP_STEPS = 3  # plain loop; ours drops its first logging window (log_every steps) instead


def plain_model(config, four_bit: bool, device: str):
    """The textbook setup: QLoRA as the peft docs show it (prepare_model_for_kbit_training, which casts
    the norms and embeddings to float32 and turns on gradient checkpointing), or LoRA on a bf16 model
    (float32 on CPU) with gradient checkpointing; LoRA with the same settings as ours."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from assistant.llm.models import resolve_llm_dir

    path, _ = resolve_llm_dir(config.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if four_bit:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, quantization_config=quant,
                                                     device_map={"": 0})
        model = prepare_model_for_kbit_training(model)
        what = "4-bit NF4"
    else:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
        what = "bf16" if device == "cuda" else "float32"
    model.config.use_cache = False
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, task_type="CAUSAL_LM")
    setup = f"plain transformers + peft, {what} LoRA, gradient checkpointing, padded batches"
    return get_peft_model(model, lora), tokenizer, setup


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def plain_loop(four_bit: bool, steps: int, device: str, overrides: dict, batch_size: int) -> dict:
    """The baseline: padded batches, model(labels=...) loss, AdamW (paged 8-bit in 4-bit mode)."""
    import torch

    from finetune.data import IGNORE, make_batches, read_examples, tokenize_all

    config = load_config("medquad_gpu.yaml", {**overrides, "output_dir": "/tmp/ra-bench-plain"})
    model, tokenizer, setup = plain_model(config, four_bit, device)
    examples, _ = read_examples(config.train_files)
    items = tokenize_all(tokenizer, examples[: batch_size * (steps + WARMUP_STEPS)], config.max_length)
    batches = make_batches(items, batch_size, tokenizer.pad_token_id, packing=False, max_length=config.max_length,
                           group_by_length=False, rng=np.random.default_rng(0))
    if len(batches) < steps + WARMUP_STEPS:
        raise SystemExit(f"bench-finetune: the data gives {len(batches)} batches of {batch_size}; "
                         f"{steps + WARMUP_STEPS} are needed (lower --steps)")
    params = [p for p in model.parameters() if p.requires_grad]
    if four_bit:
        import bitsandbytes as bnb

        optimizer = bnb.optim.PagedAdamW8bit(params, lr=config.learning_rate)
    else:
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    tokens, started = 0, time.perf_counter()
    for i, batch in enumerate(batches[: steps + WARMUP_STEPS]):
        if i == WARMUP_STEPS:
            _sync(device)
            started, tokens = time.perf_counter(), 0
        ids = torch.from_numpy(batch.input_ids).to(device)
        labels = torch.from_numpy(batch.labels).to(device)
        labels[labels == IGNORE] = -100
        mask = torch.from_numpy(batch.attention_mask).to(device)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += batch.tokens
    _sync(device)
    tps = tokens / (time.perf_counter() - started)
    result = {"setup": setup, "tokens_per_s": round(tps, 1),
              "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
              "mfu": mfu(count_parameters(model), tps, device)}
    del model, optimizer
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def ours(steps: int, out: str, device: str, overrides: dict) -> dict:
    """finetune.train on the medquad_gpu config; tokens/s over the steps after the first logging window."""
    config = load_config("medquad_gpu.yaml", {
        **overrides, "output_dir": out, "resume": False, "sample_prompts": [], "max_eval_examples": 16,
        "include_shared_medquad": False})
    config.log_every = min(config.log_every, steps)
    config.max_steps = steps + config.log_every  # the first logging window is the warm-up
    m = train(config, progress=True)
    timed = m["history"][1:]
    tps = sum(h["tokens_per_s"] for h in timed) / len(timed) if timed else m["tokens_per_s"]
    return {"setup": m["setup"], "tokens_per_s": round(tps, 1), "peak_gib": m["peak_gpu_memory_gib"],
            "mfu": mfu(m["parameters"], tps, device)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m finetune.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30, help="timed steps of each run (after the warm-up)")
    p.add_argument("--quality", action="store_true", help="also one epoch of medquad_sft: eval loss before/after")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: a small end-to-end check of this bench without a GPU (float32 rows only)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--train-file", default=None, help="instead of medquad_sft (for the CPU check)")
    p.add_argument("--quality-dir", default="runs/finetune-medquad",
                   help="with --quality: where the epoch's adapter, report and loss curve go")
    args = p.parse_args(argv)
    import torch

    from index.quiet import quiet_libraries

    quiet_libraries()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench-finetune needs a CUDA GPU; none is visible here, nothing measured "
              "(`--device cpu` checks the bench itself, small)")
        return 0
    overrides = {"device": args.device, "batch_size": args.batch_size, "max_length": args.max_length}
    if args.train_file:
        overrides |= {"train_files": [args.train_file], "eval_files": []}
    elif not (SHARED_MEDQUAD / "train.jsonl").exists():
        print(f"bench-finetune reads {SHARED_MEDQUAD}; it is absent, nothing measured")
        return 0
    gpu = args.device == "cuda"
    results: dict = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "steps": args.steps,
                     "batch_size": args.batch_size, "max_length": args.max_length}
    runs = {}
    if gpu:
        runs["plain_4bit"] = plain_loop(True, args.steps, "cuda", overrides, args.batch_size)
        runs["plain_bf16"] = plain_loop(False, args.steps, "cuda", overrides, args.batch_size)
        runs["ours_4bit_packed"] = ours(args.steps, "/tmp/ra-bench-ours", "cuda", overrides)
    else:
        runs["plain_float32"] = plain_loop(False, args.steps, "cpu", overrides, args.batch_size)
        runs["ours_float32_packed"] = ours(args.steps, "/tmp/ra-bench-ours", "cpu",
                                           overrides | {"load_in_4bit": False})
    results["runs"] = runs
    base = next(iter(runs.values()))["tokens_per_s"]
    first = next(iter(runs))
    print(f"\n## Fine-tuning throughput ({results['device']}, {time.strftime('%Y-%m-%d')}, "
          f"{args.steps} timed steps, batch {args.batch_size}, up to {args.max_length} tokens)\n")
    print(f"| run | setup | tokens/s | vs {first} | peak GiB | MFU |\n|---|---|---|---|---|---|")
    for name, r in runs.items():
        mfu_text = f"{r['mfu']:.1%}" if r.get("mfu") else "—"
        peak = r["peak_gib"] if r["peak_gib"] is not None else "—"
        print(f"| {name} | {r['setup']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / base:.1f}x | {peak} | "
              f"{mfu_text} |")
    if args.quality:
        quality = {"resume": False, "output_dir": args.quality_dir, "device": args.device}
        if args.train_file:
            quality |= {"train_files": [args.train_file], "eval_files": [], "max_length": args.max_length,
                        "batch_size": args.batch_size, "load_in_4bit": gpu}
        m = train(load_config("medquad_gpu.yaml", quality), progress=True)
        results["quality"] = {k: m[k] for k in ("eval_loss_before", "eval_loss_after", "eval_loss_change",
                                                 "steps", "tokens", "train_seconds", "tokens_per_s",
                                                 "peak_gpu_memory_gib", "mfu", "setup")}
        print(f"\none epoch: eval loss {m['eval_loss_before']:.4f} -> {m['eval_loss_after']:.4f} "
              f"({m['eval_loss_change']:+.1%}), {m['steps']} steps, {m['tokens']:,} tokens in "
              f"{m['train_seconds']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
