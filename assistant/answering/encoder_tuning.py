"""A sentence encoder tuned to one pack's documents: a second opinion on the evidence (`--evidence-encoder tuned`).

The evidence selector ranks every sentence of the passage pool against the question (evidence.py) with the
bundled all-MiniLM-L6-v2, which never saw the institution's documents. The documents themselves say which
sentences answer which question, though: a FAQ's question and its answer, a heading (with the document's
title) and the sentences under it. From those pairs a copy of the encoder is tuned once per set of pack
documents, contrastively, each pair's sentence against the other sentences of its batch (the in-batch-negatives
loss of sentence-transformers' MultipleNegativesRankingLoss, written out because its trainer needs the
`datasets` package), and cached like the intent classifier. Nothing of the question sets is used.

Measured on the packs' customer-phrased fit sets (README, "A second opinion"): ranking with the tuned copy puts
the fact in the best sentence more often but, end to end, states no more facts and gives more confidently wrong
answers; as a second judge of the evidence the base encoder chose (its own ranking and answerable model, fitted
like the shipped one: evidence.TUNED_ENCODER_WEIGHTS) it catches more near-misses and changes no stated fact.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from assistant.answering.evidence import _heads, units
from index.embed import Embedder
from index.errors import SettingError

log = logging.getLogger(__name__)

TUNE_RECIPE = 1  # bump when the pairs or the training change, so that cached encoders are tuned again


@dataclass(frozen=True)
class TuneSettings:
    steps: int = 60  # at least this many batches (a pack's ~1,000 pairs: 2 epochs), more up to an epoch ...
    max_steps: int = 150  # ... but no more than this (a 13,000-chunk index: a sample of its pairs, ~5 min)
    batch_size: int = 32
    learning_rate: float = 2e-5
    scale: float = 20.0  # cosine similarities times this are the logits (MultipleNegativesRankingLoss's default)
    max_tokens: int = 128  # sentences and headings are short; longer ones are cut while training only
    min_pairs: int = 200  # fewer pairs than this (a tiny pack): the base encoder is kept
    seed: int = 0


def training_pairs(records: Iterable[dict], min_words: int = 4) -> list[tuple[str, str]]:
    """(question, sentence) pairs from indexed chunks: a FAQ entry's question ("Q: ..." line) or the chunk's
    title and headings, with the sentence's own bold or upper-case lead-in heading, against each sentence
    of at least `min_words` words. Duplicates are dropped; order is the chunks' order."""
    pairs: list[tuple[str, str]] = []
    for record in records:
        text = record.get("text") or ""
        query = " › ".join([record.get("title") or "", *[h for h in record.get("headings") or [] if h]]).strip(" ›")
        for line in text.splitlines():
            if line.startswith("Q: "):
                query = line[3:].strip()
        heads = _heads(text)
        for unit in units(text):
            head = heads.get(unit, "")
            asked = f"{query} {head.title()}".strip() if head else query
            if asked and len(unit.split()) >= min_words:
                pairs.append((asked, unit))
    return list(dict.fromkeys(pairs))


def tune(base_path: str, pairs: list[tuple[str, str]], settings: TuneSettings = TuneSettings(),
         device: str | None = None, progress: bool = False):
    """A copy of the encoder at `base_path` tuned on `pairs`; returns the SentenceTransformer (eval mode)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from tqdm.auto import tqdm

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    model = SentenceTransformer(base_path, device=device)
    keep_length = model.max_seq_length
    model.max_seq_length = min(keep_length, settings.max_tokens)
    per_epoch = len(pairs) // settings.batch_size
    if per_epoch < 1:
        raise SettingError(f"{len(pairs)} training pairs are fewer than one batch of {settings.batch_size}")
    total = max(settings.steps, min(per_epoch, settings.max_steps))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    model.train()
    order = list(pairs)
    with tqdm(total=total, desc="tuning the evidence encoder", unit="batch", disable=not progress) as bar:
        for step in range(total):
            start = (step % per_epoch) * settings.batch_size
            if start == 0:
                rng.shuffle(order)
            batch = order[start:start + settings.batch_size]
            vectors = []
            for side in (0, 1):
                features = {k: v.to(device) if torch.is_tensor(v) else v
                            for k, v in tokenize([p[side] for p in batch]).items()}
                vectors.append(torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1))
            logits = vectors[0] @ vectors[1].T * settings.scale
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(batch), device=device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update()
    model.eval()
    model.max_seq_length = keep_length
    return model


def ensure_evidence_encoder(pack, embedder: Embedder, records: Iterable[dict], data_dir: Path, *,
                            settings: TuneSettings = TuneSettings(), progress: bool = False) -> Embedder:
    """The evidence encoder for this pack: `embedder` tuned on the pack's documents (`records`: the indexed
    chunks, read only when tuning), tuned on first use and reused after that.

    Saved under the data directory and copied to the user cache, keyed by the pack's documents folder, the
    base encoder and the recipe, as the intent classifier is: a new version of the pack's documents tunes
    it again, a user's uploads do not. A pack too small to tune on keeps `embedder`."""
    from assistant.llm.models import cache_dir

    recipe = f"{embedder.name}\0{TUNE_RECIPE}\0{settings}\0{pack.docs_fingerprint()}".encode()
    name = f"{pack.name}-{hashlib.sha256(recipe).hexdigest()[:12]}"
    target = Path(data_dir) / "evidence-encoders" / name
    cached = cache_dir() / "evidence-encoders" / name
    for place in (cached, target):  # the cache's copy first: one path per machine, so one ONNX export of it
        if (place / "modules.json").exists():
            return _loaded(place, embedder)
    pairs = training_pairs(records)
    if len(pairs) < settings.min_pairs:
        log.info("the %s pack's documents give %d sentence pairs (< %d): evidence is ranked with the base encoder",
                 pack.name, len(pairs), settings.min_pairs)
        return embedder
    writable = []
    for place in (target, cached):
        try:
            place.parent.mkdir(parents=True, exist_ok=True)
            writable.append(place)
        except OSError:
            continue
    if not writable:  # say so before minutes of tuning, not after
        raise SettingError(f"cannot save the {pack.name} pack's evidence encoder in {target.parent} or "
                           f"{cached.parent}: make the data directory (--data-dir, $RA_DATA_DIR) writable")
    log.info("tuning the %s pack's evidence encoder on %d sentence pairs from its documents; once per set of "
             "documents", pack.name, len(pairs))
    model = tune(embedder.path, pairs, settings, device=embedder.device, progress=progress)
    saved: Path | None = None
    for place in writable:
        tmp = place.with_name(f".tmp-{place.name}-{os.getpid()}-{threading.get_ident()}")
        try:
            if saved is None:
                model.save(str(tmp))
            else:
                shutil.copytree(saved, tmp)
            tmp.rename(place)
        except OSError:  # another process saved the same encoder first (keep theirs), or a place not writable
            shutil.rmtree(tmp, ignore_errors=True)
        if saved is None and (place / "modules.json").exists():
            saved = place
    if saved is None:
        raise SettingError(f"cannot save the {pack.name} pack's evidence encoder in {target.parent} or "
                           f"{cached.parent}: make the data directory (--data-dir, $RA_DATA_DIR) writable")
    return _loaded(cached if (cached / "modules.json").exists() else saved, embedder)


_LOADED: dict[tuple, Embedder] = {}
_LOADED_LOCK = threading.Lock()


def _loaded(place: Path, base: Embedder) -> Embedder:
    """One Embedder per tuned encoder and settings in the process (the UI builds an assistant per settings
    variant: they share the loaded model)."""
    key = (str(place), base.device, base.batch_size, base.backend)
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = Embedder(spec=str(place), device=base.device, batch_size=base.batch_size,
                                    backend=base.backend)
        return _LOADED[key]
