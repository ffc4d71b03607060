"""`make bench-finetune`: training throughput and memory on one GPU, ours against a plain loop, side by side.

    python -m finetune.bench [--steps 30] [--quality] [--json runs/finetune-bench.json]

Baselines (the same model, data and LoRA settings): a plain transformers + peft loop, batch 16 padded
to the longest example, no packing, the model's own loss over the whole vocabulary, in 4-bit and in
bf16. Ours: `finetune.train` with packing (16 x 1,024 tokens a step) and the loss on answer tokens
in chunks. Reported: tokens/s (real tokens, padding excluded), peak GPU memory, model FLOPs
utilisation, and the ratio to the 4-bit baseline. `--quality` also runs one epoch of medquad_sft and
reports the eval loss before and after. Needs CUDA and ../shared/data/medquad_sft; says so otherwise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from finetune.config import load_config
from finetune.train import SHARED_MEDQUAD, count_parameters, mfu, train


def plain_model(config, four_bit: bool):
    """The textbook setup: QLoRA as the peft docs show it (prepare_model_for_kbit_training, which casts
    the norms and embeddings to float32 and turns on gradient checkpointing), or bf16 LoRA with
    gradient checkpointing; LoRA with the same settings as ours."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from assistant.models import resolve_llm_dir

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
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).cuda()
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model.config.use_cache = False
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, task_type="CAUSAL_LM")
    setup = f"plain transformers + peft, {'4-bit NF4' if four_bit else 'bf16'} LoRA, gradient checkpointing"
    return get_peft_model(model, lora), tokenizer, setup


def plain_loop(four_bit: bool, steps: int, warmup: int = 3) -> dict:
    """The baseline: padded batches of 16, model(labels=...) loss, AdamW (paged 8-bit in 4-bit mode)."""
    import torch

    from finetune.data import IGNORE, make_batches, read_examples, tokenize_all

    config = load_config("medquad_gpu.yaml", {"output_dir": "/tmp/ra-bench-plain"})
    model, tokenizer, setup = plain_model(config, four_bit)
    examples, _ = read_examples(config.train_files)
    items = tokenize_all(tokenizer, examples[: 16 * (steps + warmup)], config.max_length)
    batches = make_batches(items, 16, tokenizer.pad_token_id, packing=False, max_length=config.max_length,
                           group_by_length=False, rng=np.random.default_rng(0))
    params = [p for p in model.parameters() if p.requires_grad]
    if four_bit:
        import bitsandbytes as bnb

        optimizer = bnb.optim.PagedAdamW8bit(params, lr=config.learning_rate)
    else:
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    torch.cuda.reset_peak_memory_stats()
    model.train()
    tokens, started = 0, None
    for i, batch in enumerate(batches[: steps + warmup]):
        if i == warmup:
            torch.cuda.synchronize()
            started, tokens = time.perf_counter(), 0
        ids = torch.from_numpy(batch.input_ids).cuda()
        labels = torch.from_numpy(batch.labels).cuda()
        labels[labels == IGNORE] = -100
        loss = model(input_ids=ids, attention_mask=torch.from_numpy(batch.attention_mask).cuda(), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += batch.tokens
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tps = tokens / seconds
    result = {"setup": setup, "tokens_per_s": round(tps, 1),
              "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
              "mfu": mfu(count_parameters(model), tps, "cuda")}
    del model, optimizer
    torch.cuda.empty_cache()
    return result


def ours(steps: int, out: str) -> dict:
    import torch

    torch.cuda.reset_peak_memory_stats()
    config = load_config("medquad_gpu.yaml", {"max_steps": steps, "output_dir": out, "resume": False,
                                              "sample_prompts": [], "max_eval_examples": 16,
                                              "include_shared_medquad": False})
    m = train(config, progress=True)
    return {"setup": m["setup"], "tokens_per_s": m["tokens_per_s"], "peak_gib": m["peak_gpu_memory_gib"],
            "mfu": m["mfu"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m finetune.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--quality", action="store_true", help="also one epoch of medquad_sft: eval loss before/after")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    import torch

    from index.quiet import quiet_libraries

    quiet_libraries()
    if not torch.cuda.is_available():
        print("bench-finetune needs a CUDA GPU; none is visible here, nothing measured")
        return 0
    if not (SHARED_MEDQUAD / "train.jsonl").exists():
        print(f"bench-finetune reads {SHARED_MEDQUAD}; it is absent, nothing measured")
        return 0
    results = {"gpu": torch.cuda.get_device_name(0)}
    results["plain_4bit"] = plain_loop(True, args.steps)
    results["plain_bf16"] = plain_loop(False, args.steps)
    results["ours_4bit_packed"] = ours(args.steps, "/tmp/ra-bench-ours")
    base = results["plain_4bit"]["tokens_per_s"]
    print(f"\n## Fine-tuning throughput ({results['gpu']}, {time.strftime('%Y-%m-%d')})\n")
    print("| run | tokens/s | vs plain 4-bit | peak GiB | MFU |\n|---|---|---|---|---|")
    for name in ("plain_4bit", "plain_bf16", "ours_4bit_packed"):
        r = results[name]
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "—"
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / base:.1f}x | {r['peak_gib']} | {mfu} |")
    if args.quality:
        m = train(load_config("medquad_gpu.yaml", {"resume": False}), progress=True)
        results["quality"] = {k: m[k] for k in ("eval_loss_before", "eval_loss_after", "eval_loss_change",
                                                 "train_seconds", "tokens_per_s", "peak_gpu_memory_gib")}
        print(f"\none epoch of medquad_sft: eval loss {m['eval_loss_before']:.4f} -> {m['eval_loss_after']:.4f} "
              f"({m['eval_loss_change']:+.1%})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
