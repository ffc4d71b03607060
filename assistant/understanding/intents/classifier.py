"""The intent classifier: predictions, heads, the out-of-scope threshold, saving and loading."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from assistant.config import INTENT_MODES
from assistant.understanding.intents.data import (
    OUT_OF_SCOPE,
    ClassifierDirError,
    IntentDataError,
    _label,
)
from assistant.understanding.intents.options import (
    CalibrationConfig,
    FinetuneConfig,
    LinearConfig,
    _split_options,
)

if TYPE_CHECKING:
    from index.embed import Embedder

FORMAT = "regulated-assistant/intent-classifier"
FORMAT_VERSION = 1
META_FILE = "classifier.json"
HEADS_FILE = "heads.npz"
ENCODER_DIR = "encoder"
MODES = INTENT_MODES  # linear or finetune, listed once in assistant/config.py


@dataclass(frozen=True)
class Prediction:
    """`label` is `out_of_scope` when the best intent's probability is under the threshold;
    `confidence` is the best label's probability either way; `top` the best 3 (label, probability)."""

    label: str
    confidence: float
    top: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"label": self.label, "confidence": round(self.confidence, 4),
                "top": [[label, round(p, 4)] for label, p in self.top]}


@dataclass
class Head:
    """Softmax over `x @ weight.T + bias`, where x is the L2-normalised embedding from `encoder`."""

    encoder: str  # an embedder spec (`bundled`, a directory) or ENCODER_DIR for the fine-tuned one
    weight: np.ndarray  # (labels, dim) float32
    bias: np.ndarray  # (labels,) float32
    share: float = 1.0  # weight of this head's probabilities in the average

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return _softmax(x @ self.weight.T + self.bias)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _rejected(probs: np.ndarray, labels: list[str], threshold: float) -> np.ndarray:
    best = probs.argmax(1)
    out = probs.max(1) < threshold
    if OUT_OF_SCOPE in labels:
        out |= best == labels.index(OUT_OF_SCOPE)
    return out


def calibrate_threshold(probs: np.ndarray, gold: list[str], labels: list[str],
                        config: CalibrationConfig | None = None) -> tuple[float, dict]:
    """The confidence threshold for held-out probabilities `probs` (rows: messages, columns: `labels`).

    With enough out-of-scope rows in `gold` it maximises in-scope accuracy + out-of-scope recall;
    otherwise it is the highest threshold that rejects at most `max_rejection` of the messages.
    Returns the threshold and what it gives on these rows.
    """
    config = config or CalibrationConfig()
    gold_arr = np.array(gold)
    oos = gold_arr == OUT_OF_SCOPE
    best_label = np.array(labels)[probs.argmax(1)]
    confidence = probs.max(1)
    correct = best_label == gold_arr
    candidates = np.unique(np.concatenate([[0.0], confidence]))
    if oos.sum() >= config.min_oos and (~oos).sum() > 0:
        # a message is rejected when its best label is out_of_scope or its confidence < t; count,
        # for every candidate t at once, the in-scope rows still right and the out-of-scope rows caught
        as_oos = best_label == OUT_OF_SCOPE
        kept_right = np.sort(confidence[~oos & correct & ~as_oos])
        oos_open = np.sort(confidence[oos & ~as_oos])
        right = len(kept_right) - np.searchsorted(kept_right, candidates, side="left")
        caught = (oos & as_oos).sum() + np.searchsorted(oos_open, candidates, side="left")
        scores = right / (~oos).sum() + caught / oos.sum()
        # every threshold in (candidates[i-1], candidates[j]] scores the best: take the middle of
        # that plateau, the widest margin on both sides, rather than its edge
        top = scores >= scores.max() - 1e-12
        i = int(np.argmax(top))
        j = i
        while j + 1 < len(candidates) and top[j + 1]:
            j += 1
        threshold = float(candidates[j] + (candidates[i - 1] if i > 0 else 0.0)) / 2
        rule = "max in-scope accuracy + out-of-scope recall"
    else:
        in_scope = confidence[~oos] if (~oos).any() else confidence
        threshold = float(np.quantile(in_scope, config.max_rejection, method="lower"))
        rule = f"reject at most {config.max_rejection:.0%} of held-out in-scope messages"
    rejected = _rejected(probs, labels, threshold)
    info = {"rule": rule, "rows": int(len(gold)), "out_of_scope_rows": int(oos.sum()),
            "in_scope_accuracy": _mean((correct & ~rejected)[~oos]),
            "out_of_scope_recall": _mean(rejected[oos]) if oos.any() else None}
    return threshold, info


def _mean(values: np.ndarray) -> float:
    return round(float(values.mean()), 4) if len(values) else 0.0


class HeadEncoder:
    """A head's sentence encoder: batches go through the project's Embedder; a single message, on
    the int8 ONNX path, through its own one-thread session, which stays near 2 ms on cores that
    other work keeps busy (a two-thread session then takes ~6 ms; on idle cores they are on par)."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self._single = None

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        if len(texts) == 1 and self.embedder.resolved_backend == "onnx-int8":
            if self._single is None:
                from index.onnx_embed import OnnxEncoder

                self._single = OnnxEncoder(Path(self.embedder.path), max_length=self.embedder.max_tokens,
                                           batch_size=1, threads=1)
            return self._single.encode(list(texts))
        return self.embedder.encode(list(texts), progress=progress)


class IntentClassifier:
    """Maps a message to one of the trained intents or `out_of_scope`; see the module docstring."""

    def __init__(self, labels: list[str], heads: list[Head], threshold: float, *, mode: str = "linear",
                 root: Path | None = None, encoder_dir: Path | None = None, info: dict | None = None):
        self.labels = list(labels)
        self.heads = heads
        self.threshold = float(threshold)
        self.mode = mode
        self.root = root  # where it was loaded from; resolves ENCODER_DIR
        self.info = info or {}
        self._encoder_dir = encoder_dir  # the fine-tuned encoder before save()
        self._encoders: dict[str, HeadEncoder] = {}
        self._tmp: tempfile.TemporaryDirectory | None = None  # owns _encoder_dir until save()

    # ---- training

    @classmethod
    def train(cls, texts: list[str], labels: list[str], mode: str = "linear", embedder: str | Embedder = "bundled",
              seed: int = 0, progress: bool = True, **options) -> IntentClassifier:
        """Train on utterances and their intent labels (`out_of_scope` rows welcome).

        `embedder` is a spec (`bundled`, a directory, a hub id) or an already loaded Embedder to share.
        `options` set fields of LinearConfig, FinetuneConfig and CalibrationConfig (e.g. `epochs=3`).
        """
        if mode not in MODES:
            raise IntentDataError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")
        if len(texts) != len(labels):
            raise IntentDataError(f"{len(texts)} texts but {len(labels)} labels")
        labels = [_label(lab) for lab in labels]
        counts = Counter(labels)
        if len(counts) < 2:
            raise IntentDataError("training data needs at least 2 labels (intents, or an intent and out_of_scope)")
        if few := sorted(lab for lab, n in counts.items() if n < 2):
            raise IntentDataError(f"intent(s) {', '.join(few)} have a single example: give each at least 2")
        linear_cfg, finetune_cfg, calib_cfg = _split_options(options, LinearConfig, FinetuneConfig,
                                                             CalibrationConfig)
        started = time.time()
        if isinstance(embedder, str):
            from index.embed import resolve_embedder

            embedder = resolve_embedder(embedder)
        texts = [" ".join(str(t).split()) for t in texts]
        from assistant.understanding.intents.encoder_tuning import (
            _train_finetune,  # they build classifiers
        )
        from assistant.understanding.intents.linear import _train_linear

        if mode == "linear":
            clf = _train_linear(texts, labels, embedder, seed, progress, linear_cfg, calib_cfg)
        else:
            clf = _train_finetune(texts, labels, embedder, seed, progress, linear_cfg, finetune_cfg, calib_cfg)
        clf.info.update(mode=mode, train_rows=len(texts), seed=seed, base_embedder=embedder.spec,
                        train_seconds=round(time.time() - started, 1))
        return clf

    # ---- prediction

    def _encoder(self, spec: str) -> HeadEncoder:
        """The encoder for a head's spec, opened once."""
        if spec not in self._encoders:
            from index.embed import Embedder

            path = spec
            if spec == ENCODER_DIR:
                where = self._encoder_dir or (self.root / ENCODER_DIR if self.root else None)
                if where is None:
                    raise ClassifierDirError("the fine-tuned encoder is missing: load the classifier with "
                                             "IntentClassifier.load(dir)")
                path = str(where)
            self._encoders[spec] = HeadEncoder(Embedder(spec=path))
        return self._encoders[spec]

    def probabilities(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """(len(texts), len(labels)) probabilities, the heads' weighted average."""
        total = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        if not texts:
            return total
        cache: dict[str, np.ndarray] = {}
        for head in self.heads:
            if head.encoder not in cache:
                cache[head.encoder] = self._encoder(head.encoder).encode(list(texts), progress=progress)
            total += head.share * head.probabilities(cache[head.encoder])
        return total / sum(h.share for h in self.heads)

    def predict(self, texts: list[str], progress: bool = False) -> list[Prediction]:
        probs = self.probabilities([str(t) for t in texts], progress=progress)
        rejected = _rejected(probs, self.labels, self.threshold)
        out = []
        for row, reject in zip(probs, rejected, strict=True):
            order = np.argsort(-row)[:3]
            top = [(self.labels[i], float(row[i])) for i in order]
            out.append(Prediction(label=OUT_OF_SCOPE if reject else top[0][0], confidence=top[0][1], top=top))
        return out

    def predict_one(self, text: str) -> Prediction:
        return self.predict([text])[0]

    # ---- persistence

    def save(self, directory: str | Path) -> Path:
        """Write the classifier to `directory` (created); a fine-tuned encoder is copied inside and
        exported to int8 ONNX now, so the first prediction after `load` is fast."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if any(h.encoder == ENCODER_DIR for h in self.heads):
            source = self._encoder_dir or (self.root / ENCODER_DIR if self.root else None)
            target = directory / ENCODER_DIR
            if source is None or not source.is_dir():
                raise ClassifierDirError("the fine-tuned encoder is missing; cannot save this classifier")
            if source.resolve() != target.resolve():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(source, target)
            _prepare_fast_encoder(target)
        arrays = {}
        for i, head in enumerate(self.heads):
            arrays[f"weight_{i}"] = head.weight.astype(np.float32)
            arrays[f"bias_{i}"] = head.bias.astype(np.float32)
        np.savez(directory / HEADS_FILE, **arrays)
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "mode": self.mode, "labels": self.labels,
                "threshold": self.threshold,
                "heads": [{"encoder": h.encoder, "share": h.share} for h in self.heads], "info": self.info}
        tmp = directory / f".{META_FILE}.tmp"
        tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        tmp.replace(directory / META_FILE)  # written last: its presence means the directory is complete
        if self._encoder_dir is not None:  # predict through the saved copy, whose ONNX export is ready
            self.root, self._encoder_dir = directory, None
            self._encoders.pop(ENCODER_DIR, None)
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
        return directory

    @classmethod
    def load(cls, directory: str | Path, embedder: Embedder | None = None) -> IntentClassifier:
        """Open a directory written by `save`; `embedder`, when it is the one trained with, is shared."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.exists():
            what = "does not exist" if not directory.exists() else f"has no {META_FILE}"
            raise ClassifierDirError(f"{directory} {what}: it is not an intent classifier; create one with "
                                     "`python -m assistant intents train --data FILE --out DIR`")
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT:
                raise ClassifierDirError(f"{meta_path} is not an intent classifier file (format "
                                         f"{meta.get('format')!r}); retrain with `intents train`")
            if meta.get("version", 0) > FORMAT_VERSION:
                raise ClassifierDirError(f"{directory} was saved by a newer version (format "
                                         f"{meta['version']}): upgrade, or retrain with `intents train`")
            arrays = np.load(directory / HEADS_FILE)
            heads = [Head(encoder=h["encoder"], weight=arrays[f"weight_{i}"], bias=arrays[f"bias_{i}"],
                          share=float(h["share"])) for i, h in enumerate(meta["heads"])]
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, ClassifierDirError):
                raise
            raise ClassifierDirError(f"{directory} holds a damaged intent classifier ({exc}): retrain it with "
                                     "`python -m assistant intents train`") from None
        if any(h.encoder == ENCODER_DIR for h in heads) and not (directory / ENCODER_DIR).is_dir():
            raise ClassifierDirError(f"{directory} lacks its fine-tuned encoder ({ENCODER_DIR}/): copy the whole "
                                     "directory, or retrain")
        clf = cls(meta["labels"], heads, meta["threshold"], mode=meta.get("mode", "linear"), root=directory,
                  info=meta.get("info", {}))
        if embedder is not None:
            clf._encoders[_saved_spec(embedder)] = HeadEncoder(embedder)
        return clf

    def __repr__(self) -> str:
        return (f"IntentClassifier(mode={self.mode!r}, labels={len(self.labels)}, "
                f"threshold={self.threshold:.3f}, heads={[h.encoder for h in self.heads]})")


def _prepare_fast_encoder(model_dir: Path) -> None:
    """Export the fine-tuned encoder to int8 ONNX now (cached by path) when that is how it will run."""
    from index.embed import Embedder

    embedder = Embedder(spec=str(model_dir))
    if embedder.resolved_backend == "onnx-int8":
        from index.onnx_embed import quantized_model

        quantized_model(model_dir)

def _saved_spec(embedder: Embedder) -> str:
    """The embedder spec to record: a local directory as an absolute path, anything else as given."""
    path = Path(embedder.spec).expanduser()
    return str(path.resolve()) if embedder.spec != "bundled" and path.exists() else embedder.spec
