"""Finetune mode: the encoder fine-tuned with a cosine-softmax head (bfloat16 autocast where available)."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from assistant.understanding.intents import classifier as intent_model
from assistant.understanding.intents.data import IntentDataError, stratified_split
from assistant.understanding.intents.linear import _encode, _fit_lr, _lr_head, _pick_c
from assistant.understanding.intents.options import CalibrationConfig, FinetuneConfig, LinearConfig

if TYPE_CHECKING:
    from index.embed import Embedder


@contextmanager
def limit_threads(threads: int | None):
    """Run torch and BLAS (scikit-learn) on at most `threads` CPU threads; None leaves them as they are.

    On cores that other jobs keep busy, one thread trains several times faster than two.
    """
    if not threads:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def _length_batches(texts: list[str], idx: np.ndarray, batch_size: int, rng) -> list[np.ndarray]:
    """Shuffled batches of similar-length texts (less padding), in a shuffled order."""
    perm = rng.permutation(idx)
    batches = []
    window = batch_size * 50
    for start in range(0, len(perm), window):
        chunk = perm[start:start + window]
        chunk = chunk[np.argsort([len(texts[i]) for i in chunk], kind="stable")]
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def finetune_encoder(texts: list[str], y: np.ndarray, base_path: str, init: np.ndarray,
                     config: FinetuneConfig, out_dir: Path, seed: int = 0, progress: bool = True):
    """Fine-tune the sentence encoder at `base_path` with a cosine-softmax head; save it to `out_dir`.

    `init` (labels, dim) starts the head, e.g. from class centroids. Returns the trained model (in
    eval mode) and the head's normalised weights (labels, dim).
    """
    import torch
    from sentence_transformers import SentenceTransformer

    from index.quiet import progress_bar

    torch.manual_seed(seed)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = SentenceTransformer(base_path, device=device)
    model.max_seq_length = config.max_length
    if config.freeze_embeddings:
        model[0].auto_model.embeddings.requires_grad_(False)
    head = torch.nn.Parameter(torch.tensor(init, dtype=torch.float32, device=device))
    encoder_params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": encoder_params, "lr": config.lr},
                                   {"params": [head], "lr": config.head_lr}],
                                  weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(texts) / config.batch_size)
    total = max(1, int(round(steps_per_epoch * config.epochs)))
    warmup = max(1, int(config.warmup * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / total))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    targets = torch.tensor(y, device=device)
    rng = np.random.default_rng(seed)
    prepare = getattr(model, "preprocess", None) or model.tokenize  # renamed in sentence-transformers 6
    bf16 = _bf16_supported(device) if config.bf16 is None else config.bf16
    model.train()
    step = 0
    with progress_bar(show=progress, total=total, desc="fine-tuning", unit="step") as bar:
        while step < total:
            for batch in _length_batches(texts, np.arange(len(texts)), config.batch_size, rng):
                features = prepare([texts[i] for i in batch])
                features = {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}
                with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                    emb = model(features)["sentence_embedding"]
                emb = torch.nn.functional.normalize(emb.float(), dim=-1)
                logits = config.scale * emb @ torch.nn.functional.normalize(head, dim=-1).T
                loss = loss_fn(logits, targets[batch])
                loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if step >= total:
                    break
    model.eval()
    _save_encoder(model, Path(base_path), out_dir, config.max_length)
    weight = torch.nn.functional.normalize(head.detach(), dim=-1).cpu().numpy()
    return model, weight


def _bf16_supported(device: str) -> bool:
    """True where bfloat16 matmuls run natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    try:  # Linux names the CPU's instruction sets here; elsewhere stay on float32
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _save_encoder(model, base_path: Path, out_dir: Path, max_length: int) -> None:
    """The base model's directory with the tuned weights: the same sentence-transformers layout as
    the base (which index.onnx_embed knows how to export), only model.safetensors and config.json new."""
    shutil.copytree(base_path, out_dir, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "onnx",
                                                                       "openvino", "README.md"))
    model[0].auto_model.save_pretrained(out_dir)
    st_config = out_dir / "sentence_bert_config.json"
    if st_config.exists():  # predict with the length it was trained on
        values = json.loads(st_config.read_text())
        if "max_seq_length" in values:
            values["max_seq_length"] = max_length
            st_config.write_text(json.dumps(values, indent=2))


def _encode_torch(model, texts: list[str], batch_size: int = 64) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False).astype(np.float32)


def _train_finetune(texts, labels, embedder: Embedder, seed, progress, linear: LinearConfig,
                    config: FinetuneConfig, calib: CalibrationConfig) -> intent_model.IntentClassifier:
    embedder_spec = intent_model._saved_spec(embedder)
    label_set = sorted(set(labels))
    y = np.array([label_set.index(lab) for lab in labels])
    fit, held = stratified_split(labels, config.holdout, seed)
    if len(held) == 0:
        raise IntentDataError("too little data to hold out a calibration slice: give each intent at least 3 examples")
    frozen = _encode(embedder, texts, progress)
    centroids = np.zeros((len(label_set), frozen.shape[1]), dtype=np.float32)
    np.add.at(centroids, y[fit], frozen[fit])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)

    tmp = tempfile.TemporaryDirectory(prefix="ra-intents-")
    encoder_dir = Path(tmp.name) / intent_model.ENCODER_DIR
    model, weight = finetune_encoder([texts[i] for i in fit], y[fit], embedder.path,
                                     centroids, config, encoder_dir, seed, progress)
    tuned = intent_model.Head(encoder=intent_model.ENCODER_DIR, weight=(config.scale * weight).astype(np.float32),
                 bias=np.zeros(len(label_set), dtype=np.float32))
    probs_tuned = tuned.probabilities(_encode_torch(model, [texts[i] for i in held]))
    del model
    heads, probs, info = [tuned], probs_tuned, {}
    if config.ensemble:
        c, _ = _pick_c(frozen[fit], y[fit], label_set, linear, seed, embedder_spec, progress=False)
        lr = _lr_head(_fit_lr(frozen[fit], y[fit], c, linear, seed), len(label_set), embedder_spec)
        probs_lr = lr.probabilities(frozen[held])
        shares = {}
        for share in (0.0, 0.2, 0.35, 0.5):
            mixed = (1 - share) * probs_tuned + share * probs_lr
            shares[share] = float((mixed.argmax(1) == y[held]).mean())
        share = max(shares, key=lambda s: (shares[s], -s))  # ties: the simpler, faster model
        info.update(C=c, ensemble_accuracy={str(k): round(v, 4) for k, v in shares.items()},
                    frozen_share=share)
        if share > 0:
            probs = (1 - share) * probs_tuned + share * probs_lr
            # the frozen head is cheap: refit it on every row, as linear mode does after choosing
            lr = _lr_head(_fit_lr(frozen, y, c, linear, seed), len(label_set), embedder_spec)
            tuned.share, lr.share = 1 - share, share
            heads.append(lr)
    threshold, calibration = intent_model.calibrate_threshold(probs, [labels[i] for i in held], label_set, calib)
    info.update(calibration=calibration, finetune=asdict(config))
    clf = intent_model.IntentClassifier(label_set, heads, threshold, mode="finetune", encoder_dir=encoder_dir, info=info)
    clf._tmp = tmp
    clf._encoders[embedder_spec] = intent_model.HeadEncoder(embedder)
    return clf
