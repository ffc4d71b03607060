"""LoRA fine-tuning: QLoRA (4-bit NF4) on CUDA, plain LoRA in float32 on CPU, one code path.

The loss runs the LM head only on the assistant's tokens, a chunk at a time with the chunk's logits
recomputed in the backward pass, so the 49k-word vocabulary's logits never sit in memory for a whole
batch. Checkpoints are written every `save_every` steps; a rerun with the same output dir resumes.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from finetune.config import TrainConfig
from finetune.data import (
    IGNORE,
    Batch,
    DataReport,
    check_bad_rows,
    make_batches,
    read_examples,
    split_eval,
    tokenize_all,
)
from index.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SHARED_MEDQUAD = ROOT.parent / "shared" / "data" / "medquad_sft"
CHECKPOINT = "checkpoint"
ADAPTER = "adapter"
# dense bf16 peak of the GPUs we report model FLOPs utilisation for (tensor cores, no sparsity)
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


class FinetuneError(UserError, RuntimeError):
    """A run that cannot start; the message says what to change."""


@dataclass
class RunState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens: int = 0  # real tokens trained on
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)  # {"step", "loss", "lr", "tokens_per_s"}
    evals: list[dict] = field(default_factory=list)  # {"step", "eval_loss"}


@dataclass
class Dist:
    """Data parallelism across processes started by `accelerate launch` or `torchrun` (one per GPU, or
    several on CPU with gloo); each process trains on its share of the batches. World size 1 is the
    plain single-process run.

    ddp:  every process holds the whole model; the LoRA gradients are averaged after every step
          (DDP's all-reduce, done by hand, because the chunked loss calls the decoder directly).
    fsdp: each decoder layer is sharded across the processes with FSDP2 (`fully_shard`): a process
          keeps 1/N of the base weights and of the LoRA weights and optimizer state, and gathers a
          layer's weights only while it runs. For models too big for one GPU in bf16.
    """

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    fsdp: bool = False

    @classmethod
    def from_env(cls, parallel: str = "auto") -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if parallel == "auto":
            parallel = "fsdp" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" else "ddp"
        return cls(world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
                   fsdp=world > 1 and parallel == "fsdp")

    @property
    def computes(self) -> bool:
        """Whether this process takes part in evaluation and sample generation (all of them under FSDP,
        whose every forward pass gathers weights from every process; else only the main one)."""
        return self.main or self.fsdp

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def average_gradients(self, params) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist
        from torch.distributed.tensor import DTensor

        for p in params:
            if p.grad is not None and not isinstance(p.grad, DTensor):  # FSDP has reduced sharded ones
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def shard(self, model, device: str) -> None:
        """FSDP2: shard every decoder layer, and the decoder itself as the root (embeddings, final norm;
        a tied LM head shares the gathered embedding). bf16 compute with float32 gradient reduction on CUDA."""
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        decoder, _ = _decoder_and_head(model)
        layers = getattr(decoder, "layers", None)
        if layers is None:
            raise FinetuneError("--parallel fsdp needs a decoder with a `layers` list (Llama-style); use ddp")
        policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                  if device.startswith("cuda") else MixedPrecisionPolicy())
        for layer in layers:
            fully_shard(layer, mp_policy=policy)
        fully_shard(decoder, mp_policy=policy)  # the root: embeddings and final norm, gathered once per step

    def full_adapter_state(self, model) -> dict:
        """The trainable (LoRA) weights as whole CPU tensors; under FSDP every process must call this."""
        from torch.distributed.tensor import DTensor

        state = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                full = p.full_tensor() if isinstance(p, DTensor) else p
                state[name] = full.detach().to("cpu", copy=True)
        return state

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t[0])


def resolve_device(config: TrainConfig, dist: Dist | None = None) -> str:
    import torch

    dist = dist or Dist()
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and dist.world > 1:
        device = f"cuda:{dist.local_rank}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FinetuneError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu")
    four_bit = config.load_in_4bit if config.load_in_4bit is not None else device.startswith("cuda")
    if four_bit and not device.startswith("cuda"):
        raise FinetuneError("4-bit (QLoRA) training needs a CUDA GPU (bitsandbytes NF4); on CPU run with "
                            "--load-in-4bit false (LoRA in float32)")
    return device


def load_model(config: TrainConfig, device: str):
    """(peft model, tokenizer, description) with LoRA on the configured modules."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assistant.llm.models import ModelSpecError, resolve_llm_dir

    try:
        path, _ = resolve_llm_dir(config.model)
    except ModelSpecError as exc:
        raise FinetuneError(str(exc)) from exc
    cuda = device.startswith("cuda")
    four_bit = config.load_in_4bit if config.load_in_4bit is not None else cuda
    bf16 = config.bf16 if config.bf16 is not None else cuda
    checkpointing = config.gradient_checkpointing if config.gradient_checkpointing is not None else cuda
    kwargs: dict = {"dtype": torch.bfloat16 if (bf16 or four_bit) else torch.float32}
    if four_bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise FinetuneError("4-bit training needs bitsandbytes: pip install bitsandbytes") from exc
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["device_map"] = {"": torch.device(device).index or 0}  # one GPU per process
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not four_bit:
        model.to(device)
    # The base model stays frozen in its load dtype. peft's prepare_model_for_kbit_training would also
    # cast the embeddings and norms to float32, which makes every activation float32: twice the memory
    # and no bf16 attention kernels. Instead the forward pass runs under bf16 autocast (`_autocast`),
    # and the LoRA weights, which peft keeps in float32, are the master copies the optimizer updates.
    for param in model.parameters():
        param.requires_grad = False
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = count_parameters(model)
    what = (f"{config.model} ({path}) on {device}, {'4-bit NF4 + LoRA' if four_bit else 'LoRA'}, "
            f"{'bf16' if (bf16 or four_bit) else 'float32'}, gradient checkpointing {'on' if checkpointing else 'off'}, "
            f"{trainable / 1e6:.2f}M trainable of {total / 1e6:.1f}M parameters")
    return model, tokenizer, what


def count_parameters(model) -> int:
    """The model's parameters as it computes with them: a 4-bit weight counts its unpacked size
    (bitsandbytes stores two values a byte, so `numel` would halve it, and the MFU with it)."""
    total = 0
    for p in model.parameters():
        shape = getattr(getattr(p, "quant_state", None), "shape", None)
        total += math.prod(shape) if shape is not None else p.numel()
    return total


def mfu(n_params: int, tokens_per_s: float, device: str) -> float | None:
    """Model FLOPs utilisation: 6 x parameters x tokens/s over the GPU's dense bf16 peak (the usual
    convention; with LoRA most weight gradients are skipped, so the work done is nearer 4 x)."""
    flops = peak_flops(device)
    return round(6 * n_params * tokens_per_s / flops, 4) if flops else None


def _decoder_and_head(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings()
    return decoder, head


def _autocast(model, device: str):
    """bf16 autocast on CUDA when the base model computes in bf16 (4-bit or bf16 LoRA); else nothing."""
    import contextlib

    import torch

    if not device.startswith("cuda"):
        return contextlib.nullcontext()
    bf16 = any(p.dtype == torch.bfloat16 for p in model.parameters() if not p.requires_grad)
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)


def batch_loss(model, batch: Batch, device: str, chunk_tokens: int):
    """Mean cross-entropy over the batch's supervised tokens, LM head in checkpointed chunks."""
    with _autocast(model, device):
        return _batch_loss(model, batch, device, chunk_tokens)


def _batch_loss(model, batch: Batch, device: str, chunk_tokens: int):
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    ids = torch.from_numpy(batch.input_ids).to(device)
    labels = torch.from_numpy(batch.labels).to(device)
    mask = torch.from_numpy(batch.attention_mask).to(device)
    positions = torch.from_numpy(batch.position_ids).to(device)
    decoder, head = _decoder_and_head(model)
    if decoder is None or head is None:  # an architecture without the usual split: the model's own loss
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss, int((labels != IGNORE).sum())
    # Packed rows go without a padding mask: transformers then reads the restarting position ids as
    # example boundaries and masks attention across them (padding, at the end of the last row, restarts
    # at position 0 too, so it forms its own examples, which carry no labels).
    hidden = decoder(input_ids=ids, attention_mask=None if batch.packed else mask,
                     position_ids=positions, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    h = hidden[:, :-1][keep]
    t = targets[keep]
    n = int(t.numel())
    if n == 0:
        return hidden.sum() * 0.0, 0

    def chunk_loss(h_chunk, t_chunk):
        return F.cross_entropy(head(h_chunk).float(), t_chunk, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, n, chunk_tokens):
        if torch.is_grad_enabled():
            total = total + checkpoint(chunk_loss, h[s:s + chunk_tokens], t[s:s + chunk_tokens], use_reentrant=False)
        else:
            total = total + chunk_loss(h[s:s + chunk_tokens], t[s:s + chunk_tokens])
    return total / n, n


def evaluate_loss(model, batches: list[Batch], device: str, chunk_tokens: int) -> float | None:
    import torch

    if not batches:
        return None
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            loss, n = batch_loss(model, batch, device, chunk_tokens)
            total += loss.item() * n
            count += n
    model.train()
    return total / max(count, 1)


def generate_samples(model, tokenizer, prompts: list[str], device: str, max_new_tokens: int,
                     system_prompt: str | None = None) -> list[str]:
    import torch

    model.eval()
    out = []
    for prompt in prompts:
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": prompt}]
        enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        ids = enc["input_ids"].to(device)
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id, use_cache=True)
        out.append(tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip())
    model.train()
    return out


def _optimizer(model, config: TrainConfig, device: str):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    name = config.optimizer
    if name == "auto":
        name = "paged_adamw_8bit" if device.startswith("cuda") else "adamw"
    if name == "paged_adamw_8bit":
        if not device.startswith("cuda"):
            raise FinetuneError("paged_adamw_8bit needs CUDA: use --optimizer adamw on CPU")
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=config.learning_rate, weight_decay=config.weight_decay), name
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay), name


def _schedule(config: TrainConfig, total: int):
    warmup = max(1, int(config.warmup_ratio * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.lr_scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if config.lr_scheduler == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def gather_data(config: TrainConfig, tokenizer, progress: bool):
    """(train items, eval items, data report), the bad-row rule applied before anything trains."""
    files = list(config.train_files)
    eval_files = list(config.eval_files)
    if config.include_shared_medquad and (SHARED_MEDQUAD / "train.jsonl").exists():
        files.append(str(SHARED_MEDQUAD / "train.jsonl"))
        if (SHARED_MEDQUAD / "valid.jsonl").exists():
            eval_files.append(str(SHARED_MEDQUAD / "valid.jsonl"))
    examples, report = read_examples(files, config.system_prompt)
    check_bad_rows(report, config.max_bad_fraction)
    if eval_files:
        held, eval_report = read_examples(eval_files, config.system_prompt)
        check_bad_rows(eval_report, config.max_bad_fraction)
        train = examples
        held = held[:config.max_eval_examples]
    else:
        train, held = split_eval(examples, config.eval_fraction, config.max_eval_examples, config.seed)
    if config.max_train_examples:
        rng = np.random.default_rng(config.seed)
        keep = sorted(rng.permutation(len(train))[:config.max_train_examples].tolist())
        train = [train[i] for i in keep]
    train_items = tokenize_all(tokenizer, train, config.max_length, progress)
    eval_items = tokenize_all(tokenizer, held, config.max_length, progress)
    if not train_items:
        raise FinetuneError("no training example has an answer token within max_length: raise --max-length")
    return train_items, eval_items, report


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _save_checkpoint(model, optimizer, state: RunState, out: Path, dist: Dist | None = None) -> None:
    """Adapter, optimizer state and progress, written by the main process (gathered first under FSDP)."""
    import torch

    dist = dist or Dist()
    adapter_state = optim_state = None
    if dist.fsdp:  # collectives: every process takes part, the main one writes
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        adapter_state = dist.full_adapter_state(model)
        optim_state = get_optimizer_state_dict(model, optimizer,
                                               options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.main:
        tmp = out / f".{CHECKPOINT}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, state_dict=adapter_state)
        torch.save(optim_state if dist.fsdp else optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(asdict(state)))
        final = out / CHECKPOINT
        old = out / f".{CHECKPOINT}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def _load_adapter_checkpoint(model, out: Path) -> RunState | None:
    """The LoRA weights and progress of an interrupted run, or None."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    ckpt = out / CHECKPOINT
    if not (ckpt / "state.json").exists():
        return None
    set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
    return RunState(**json.loads((ckpt / "state.json").read_text()))


def _load_optimizer_checkpoint(model, optimizer, out: Path, dist: Dist) -> None:
    import torch

    saved = torch.load(out / CHECKPOINT / "optimizer.pt", map_location="cpu", weights_only=False)
    if dist.fsdp:  # a whole (unsharded) optimizer state: each process takes its shard
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(model, optimizer, optim_state_dict=saved,
                                 options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(saved)


def peak_flops(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def train(config: TrainConfig, progress: bool = True) -> dict:
    """Run one fine-tuning; returns the metrics also written to OUTPUT_DIR/metrics.json.

    Under `accelerate launch` / `torchrun` every process calls this; the main one writes the results.
    """
    import torch

    dist = Dist.from_env(config.parallel)
    device = resolve_device(config, dist)
    if dist.world > 1:
        import torch.distributed

        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        return _train(config, dist, device, progress and dist.main)
    finally:
        if dist.world > 1:
            import torch.distributed

            torch.distributed.destroy_process_group()


def _train(config: TrainConfig, dist: Dist, device: str, progress: bool) -> dict:
    import torch
    from tqdm import tqdm

    from finetune.report import write_report

    _seed_all(config.seed)  # the same LoRA initialisation in every process
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if dist.fsdp and (config.load_in_4bit if config.load_in_4bit is not None else device.startswith("cuda")):
        raise FinetuneError("--parallel fsdp shards bf16 or float32 weights, not 4-bit ones: add --load-in-4bit "
                            "false, or use ddp, where each GPU holds the whole 4-bit model")
    model, tokenizer, description = load_model(config, device)
    if dist.fsdp:
        description += f", fully sharded (FSDP2) over {dist.world} processes"
    elif dist.world > 1:
        description += f", data parallel over {dist.world} processes"
    train_items, eval_items, data_report = gather_data(config, tokenizer, progress)
    pad = tokenizer.pad_token_id
    eval_batches = make_batches(eval_items, config.batch_size, pad, packing=False, max_length=config.max_length,
                                group_by_length=True, rng=np.random.default_rng(0))
    batches_per_epoch = len(make_batches(train_items, config.batch_size, pad, packing=config.packing,
                                         max_length=config.max_length, group_by_length=config.group_by_length,
                                         rng=np.random.default_rng(config.seed))) // dist.world
    if batches_per_epoch == 0:
        raise FinetuneError(f"too little data for {dist.world} processes: fewer batches than processes")
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / config.gradient_accumulation))
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    state = _load_adapter_checkpoint(model, out) if config.resume else None  # before sharding: whole tensors
    resumed = state is not None
    if dist.fsdp:
        dist.shard(model, device)
    optimizer, optimizer_name = _optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, total_steps))
    if resumed:  # after the scheduler, which adds `initial_lr` to the groups the saved state has
        _load_optimizer_checkpoint(model, optimizer, out, dist)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    before_path = out / "before.json"
    dist.barrier()  # every process has read the checkpoint before the main one may replace it
    if resumed and before_path.exists():
        before = json.loads(before_path.read_text())
    else:
        state = RunState()
        before = {"eval_loss": None, "samples": []}
        if dist.main:
            shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
        if dist.computes:
            with model.disable_adapter():
                before = {"eval_loss": evaluate_loss(model, eval_batches, device, config.loss_chunk_tokens),
                          "samples": generate_samples(model, tokenizer, config.sample_prompts, device,
                                                      config.sample_max_new_tokens, config.system_prompt)}
        if dist.main:
            before_path.write_text(json.dumps(before))
    dist.barrier()
    for _ in range(state.step):
        scheduler.step()

    model.train()
    window_tokens, window_start, running = 0, time.perf_counter(), []
    bar = tqdm(total=total_steps, initial=state.step, desc="fine-tuning", unit="step", disable=not progress)
    started = time.perf_counter()
    base_seconds = state.train_seconds
    while state.step < total_steps:
        rng = np.random.default_rng(config.seed + state.epoch)
        epoch_batches = make_batches(train_items, config.batch_size, pad, packing=config.packing,
                                     max_length=config.max_length, group_by_length=config.group_by_length, rng=rng)
        epoch_batches = epoch_batches[dist.rank:batches_per_epoch * dist.world:dist.world]  # this process's share
        while state.batch_in_epoch < len(epoch_batches) and state.step < total_steps:
            group = epoch_batches[state.batch_in_epoch:state.batch_in_epoch + config.gradient_accumulation]
            supervised = sum(int((b.labels[:, 1:] != IGNORE).sum()) for b in group) or 1
            step_loss = 0.0
            for batch in group:
                loss, n = batch_loss(model, batch, device, config.loss_chunk_tokens)
                (loss * (n / supervised)).backward()
                step_loss += loss.item() * n / supervised
                state.tokens += batch.tokens
                window_tokens += batch.tokens
            trainable = [p for p in model.parameters() if p.requires_grad]
            dist.average_gradients(trainable)
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.batch_in_epoch += len(group)
            state.step += 1
            running.append(dist.sum(step_loss) / dist.world if dist.world > 1 else step_loss)
            elapsed = time.perf_counter() - window_start
            tps = window_tokens / elapsed if elapsed > 0 else 0.0
            bar.update()
            bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{tps:,.0f}")
            if state.step % config.log_every == 0 or state.step == total_steps:
                tps = dist.sum(tps)  # all processes' tokens
                state.history.append({"step": state.step, "loss": round(float(np.mean(running)), 5),
                                      "lr": scheduler.get_last_lr()[0], "tokens_per_s": round(tps, 1)})
                running, window_tokens, window_start = [], 0, time.perf_counter()
            if dist.computes and config.eval_every and state.step % config.eval_every == 0 \
                    and state.step < total_steps:
                state.evals.append({"step": state.step, "eval_loss": evaluate_loss(
                    model, eval_batches, device, config.loss_chunk_tokens)})
            if config.save_every and state.step % config.save_every == 0 and state.step < total_steps:
                state.train_seconds = base_seconds + time.perf_counter() - started
                _save_checkpoint(model, optimizer, state, out, dist)
        if state.batch_in_epoch >= len(epoch_batches):
            state.epoch += 1
            state.batch_in_epoch = 0
    bar.close()
    state.train_seconds = base_seconds + time.perf_counter() - started
    state.tokens = int(dist.sum(state.tokens))
    dist.barrier()
    if not dist.computes:  # the main process evaluates and writes the results
        return {"rank": dist.rank, "steps": state.step}
    after_loss = evaluate_loss(model, eval_batches, device, config.loss_chunk_tokens)
    state.evals.append({"step": state.step, "eval_loss": after_loss})
    after_samples = generate_samples(model, tokenizer, config.sample_prompts, device, config.sample_max_new_tokens,
                                     config.system_prompt)
    adapter_state = dist.full_adapter_state(model) if dist.fsdp else None
    if not dist.main:
        return {"rank": dist.rank, "steps": state.step}
    adapter_dir = out / ADAPTER
    shutil.rmtree(adapter_dir, ignore_errors=True)
    model.save_pretrained(adapter_dir, state_dict=adapter_state)
    tokenizer.save_pretrained(adapter_dir)

    tokens_per_s = state.tokens / state.train_seconds if state.train_seconds else 0.0
    n_params = count_parameters(model)
    metrics = {
        "model": config.model, "device": device, "setup": description, "optimizer": optimizer_name,
        "processes": dist.world, "parallel": "fsdp" if dist.fsdp else ("ddp" if dist.world > 1 else None),
        "resumed": resumed, "steps": state.step, "epochs_done": round(state.step / steps_per_epoch, 3),
        "train_examples": len(train_items), "eval_examples": len(eval_items),
        "bad_rows": len(data_report.bad), "rows": data_report.rows,
        "eval_loss_before": before["eval_loss"], "eval_loss_after": after_loss,
        "perplexity_before": math.exp(before["eval_loss"]) if before["eval_loss"] is not None else None,
        "perplexity_after": math.exp(after_loss) if after_loss is not None else None,
        "eval_loss_change": (after_loss / before["eval_loss"] - 1) if after_loss and before["eval_loss"] else None,
        "train_loss_first": state.history[0]["loss"] if state.history else None,
        "train_loss_last": state.history[-1]["loss"] if state.history else None,
        "tokens": state.tokens, "train_seconds": round(state.train_seconds, 2), "tokens_per_s": round(tokens_per_s, 1),
        "peak_gpu_memory_gib": (round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                                if device.startswith("cuda") else None),
        "parameters": n_params, "mfu": mfu(n_params, tokens_per_s, device),
        "adapter_dir": str(adapter_dir), "history": state.history, "evals": state.evals,
        "samples": [{"prompt": p, "before": b, "after": a}
                    for p, b, a in zip(config.sample_prompts, before["samples"], after_samples, strict=True)],
        "config": asdict(config),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_report(metrics, out, data_report)
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)  # finished: the adapter is the result
    before_path.unlink(missing_ok=True)
    return metrics


def report_data(config: TrainConfig) -> DataReport:
    """Only read and check the data (for `python -m finetune check-data`)."""
    _, report = read_examples(list(config.train_files), config.system_prompt)
    return report
