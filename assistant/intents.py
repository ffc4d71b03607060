"""Intent classification: train on labelled utterances, detect out-of-scope messages, predict, evaluate.

    python -m assistant intents train --data assistant/packs/bank/intents.csv --out runs/bank-intents
    python -m assistant intents train --data ../shared/data/banking77/train.csv --out runs/b77 --mode finetune
    python -m assistant intents predict runs/bank-intents --input messages.txt --json
    python -m assistant intents eval runs/bank-intents --data held_out.csv --out runs/bank-report

Two modes:
- `linear` (default, seconds): the frozen sentence embedder + a logistic-regression head, its C
  chosen on a held-out slice of the training data.
- `finetune` (minutes on a CPU): the encoder itself is fine-tuned with a cosine-softmax head,
  label-smoothed cross-entropy and bfloat16 autocast where the hardware has it; it is saved inside
  the classifier directory and runs through the int8 ONNX path at prediction time. A frozen-embedding
  linear head joins it (averaged probabilities) only when that helps on held-out training data.

Out-of-scope: `out_of_scope` rows in the training data are a class of their own. On top of that a
confidence threshold is calibrated on training data the head did not see (cross-validation in
linear mode, a held-out slice in finetune mode): with out-of-scope rows it maximises in-scope
accuracy + out-of-scope recall; without them it rejects at most 5% of the held-out in-scope messages.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from index.errors import SettingError, UserError

if TYPE_CHECKING:
    from index.embed import Embedder

OUT_OF_SCOPE = "out_of_scope"
FORMAT = "regulated-assistant/intent-classifier"
FORMAT_VERSION = 1
META_FILE = "classifier.json"
HEADS_FILE = "heads.npz"
ENCODER_DIR = "encoder"
MODES = ("linear", "finetune")
TEXT_COLUMNS = ("text", "utterance")
LABEL_COLUMNS = ("label", "category", "intent")
OOS_ALIASES = {"oos": OUT_OF_SCOPE, "out-of-scope": OUT_OF_SCOPE}  # CLINC150 calls it `oos`


class IntentDataError(UserError, ValueError):
    """Training or evaluation data that cannot be used; the message names the file, line and fix."""


class ClassifierDirError(UserError, ValueError):
    """A directory that does not hold a saved intent classifier."""


# --------------------------------------------------------------------------------------------- data


def load_utterances(path: str | Path, split: str = "train", min_per_label: int = 2) -> tuple[list[str], list[str]]:
    """Read (texts, labels) from a CSV, JSONL or CLINC150-style JSON file.

    CSV: a `text` column and a `label` (or `category` or `intent`) column. JSONL: one
    `{"text", "label"}` object a line. JSON: CLINC150's `{"train": [[text, intent], ...],
    "oos_train": [...], "val": ..., "oos_val": ...}` (`split` picks `train` + `oos_train` or
    `val` + `oos_val`; its `oos` label becomes `out_of_scope`), or a list of `{"text", "label"}`.
    Every label needs at least `min_per_label` examples (training needs 2; pass 1 for test data).
    """
    path = Path(path)
    if not path.is_file():
        raise IntentDataError(f"{path}: no such file: pass a .csv, .jsonl or .json file of labelled utterances")
    raw = path.read_text(encoding="utf-8-sig")
    if not raw.strip():
        raise IntentDataError(f"{path}: the file is empty: add rows of text and label")
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        rows = _read_jsonl(path, raw)
    elif suffix == ".json":
        rows = _read_json(path, raw, split)
    else:
        rows = _read_csv(path, raw)
    if not rows:
        raise IntentDataError(f"{path}: no utterances found: add rows of text and label")
    counts = Counter(label for _, label, _ in rows)
    for _, label, line in rows:
        if counts[label] < min_per_label:
            raise IntentDataError(
                f"{path} line {line}: intent '{label}' has only {counts[label]} example(s): give every intent "
                f"at least {min_per_label} (20 or more works best) or remove the row")
    return [t for t, _, _ in rows], [lab for _, lab, _ in rows]


def _label(value: str) -> str:
    value = value.strip()
    return OOS_ALIASES.get(value.lower(), value)


def _row(path: Path, line: int, text, label) -> tuple[str, str, int]:
    if not isinstance(text, str) or not text.strip():
        raise IntentDataError(f"{path} line {line}: the text is empty: write the utterance or remove the row")
    if not isinstance(label, str) or not label.strip():
        raise IntentDataError(f"{path} line {line}: the label is empty: name the intent or remove the row")
    return " ".join(text.split()), _label(label), line


def _read_csv(path: Path, raw: str) -> list[tuple[str, str, int]]:
    reader = csv.reader(raw.splitlines())
    header = [h.strip().lower() for h in next(reader)]
    text_col = next((header.index(c) for c in TEXT_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    if text_col is None or label_col is None:
        missing = "a `text` column" if text_col is None else "a `label` (or `category` / `intent`) column"
        raise IntentDataError(f"{path} line 1: the header {header} lacks {missing}: "
                              "the first line must name the columns, e.g. `text,label`")
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        line = reader.line_num
        if len(values) <= max(text_col, label_col):
            raise IntentDataError(f"{path} line {line}: {len(values)} column(s) where the header has "
                                  f"{len(header)}: quote texts that contain commas")
        rows.append(_row(path, line, values[text_col], values[label_col]))
    return rows


def _record(path: Path, line: int, obj) -> tuple[str, str, int]:
    if not isinstance(obj, dict) or "text" not in obj:
        raise IntentDataError(f'{path} line {line}: expected an object like {{"text": ..., "label": ...}}')
    label = next((obj[c] for c in LABEL_COLUMNS if c in obj), None)
    if label is None:
        raise IntentDataError(f'{path} line {line}: the object has no "label" (or "category" / "intent") key')
    return _row(path, line, obj["text"], label)


def _read_jsonl(path: Path, raw: str) -> list[tuple[str, str, int]]:
    rows = []
    for line, content in enumerate(raw.splitlines(), 1):
        if not content.strip():
            continue
        try:
            obj = json.loads(content)
        except json.JSONDecodeError as exc:
            raise IntentDataError(f"{path} line {line}: not valid JSON ({exc.msg}): write one "
                                  '{"text": ..., "label": ...} object per line') from None
        rows.append(_record(path, line, obj))
    return rows


def _read_json(path: Path, raw: str, split: str) -> list[tuple[str, str, int]]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise IntentDataError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg}): fix the syntax, "
                              "or use .jsonl for one object per line") from None
    if isinstance(data, list):
        return [_record(path, i, obj) for i, obj in enumerate(data, 1)]
    if not isinstance(data, dict) or split not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise IntentDataError(f"{path} line 1: expected CLINC150's layout with a '{split}' key "
                              f"(found {keys}) or a list of {{\"text\", \"label\"}} objects")
    rows = []
    for key in (split, f"oos_{split}"):
        for i, item in enumerate(data.get(key) or [], 1):
            if not (isinstance(item, list | tuple) and len(item) == 2):
                raise IntentDataError(f"{path} line 1: item {i} of '{key}' is not a [text, intent] pair")
            label = OUT_OF_SCOPE if key.startswith("oos_") else item[1]
            rows.append(_row(path, 1, item[0], label))
    return rows


def stratified_split(labels: list[str], fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held_out) indices: about `fraction` of every label held out, never a label's last example."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    keep, held = [], []
    for idx in by_label.values():
        idx = list(rng.permutation(idx))
        n = min(len(idx) - 1, int(round(fraction * len(idx))))
        if len(idx) >= 3:
            n = max(n, 1)
        held += idx[:n]
        keep += idx[n:]
    return np.array(sorted(keep), dtype=int), np.array(sorted(held), dtype=int)


# ------------------------------------------------------------------------------------------- config


@dataclass
class LinearConfig:
    """The frozen-embedding logistic-regression head."""

    c_grid: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0)  # inverse L2 strength, picked on held-out data
    c_holdout: float = 0.15  # share of the training data held out to pick C
    folds: int = 5  # cross-validation folds for the out-of-scope threshold
    max_iter: int = 1000

    def __post_init__(self) -> None:
        if not self.c_grid or min(self.c_grid) <= 0:
            raise SettingError("`c_grid` must list positive values of C")
        if not 0 < self.c_holdout < 0.5:
            raise SettingError(f"`c_holdout` must be in (0, 0.5), got {self.c_holdout}")
        if self.folds < 2:
            raise SettingError(f"`folds` must be at least 2, got {self.folds}")


@dataclass
class FinetuneConfig:
    """Fine-tuning the encoder with a cosine-softmax head (CPU, or CUDA when present)."""

    epochs: float = 5.0
    lr: float = 1e-4  # encoder learning rate (AdamW, linear warm-up then decay)
    head_lr: float = 3e-3
    batch_size: int = 32
    max_length: int = 64  # tokens; intents sit in the first sentence or two
    scale: float = 20.0  # cosine logits are multiplied by this before the softmax
    label_smoothing: float = 0.1
    warmup: float = 0.06  # share of the steps
    weight_decay: float = 0.01
    freeze_embeddings: bool = True  # the word-embedding matrix is half the model and gains little from tuning
    holdout: float = 0.1  # share kept out of fine-tuning to calibrate the threshold and ensemble weight
    ensemble: bool = True  # average with a frozen-embedding linear head when that helps on the held-out slice
    device: str | None = None  # default: cuda when present, else cpu
    bf16: bool | None = None  # bfloat16 autocast; default: where the hardware has it (~1.7x faster on such CPUs)

    def __post_init__(self) -> None:
        for name in ("epochs", "lr", "head_lr", "scale"):
            if getattr(self, name) <= 0:
                raise SettingError(f"`{name}` must be positive, got {getattr(self, name)}")
        if self.batch_size < 1 or self.max_length < 8:
            raise SettingError("`batch_size` must be >= 1 and `max_length` >= 8")
        if not 0 < self.holdout < 0.5:
            raise SettingError(f"`holdout` must be in (0, 0.5), got {self.holdout}")


@dataclass
class CalibrationConfig:
    """How the out-of-scope confidence threshold is chosen on held-out training data."""

    max_rejection: float = 0.05  # without out-of-scope rows: share of in-scope messages the threshold may reject
    min_oos: int = 3  # fewer held-out out-of-scope rows than this: treat the data as having none


def _split_options(options: dict, *configs: type) -> list:
    """Route keyword options to the dataclass that declares them; unknown names are an error."""
    known = {cls: {f.name for f in fields(cls)} for cls in configs}
    unknown = sorted(set(options) - set().union(*known.values()))
    if unknown:
        valid = ", ".join(sorted(set().union(*known.values())))
        raise SettingError(f"unknown training option(s) {', '.join(unknown)}: choose from {valid}")
    out = []
    for cls in configs:
        values = {k: v for k, v in options.items() if k in known[cls]}
        if "c_grid" in values:
            values["c_grid"] = tuple(values["c_grid"])
        out.append(cls(**values))
    return out


# -------------------------------------------------------------------------------------- predictions


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


# ------------------------------------------------------------------------------------------- model


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


# ------------------------------------------------------------------------------------- linear mode


def _encode(embedder, texts: list[str], progress: bool) -> np.ndarray:
    return embedder.encode(list(texts), progress=progress)


def _fit_lr(x: np.ndarray, y: np.ndarray, c: float, config: LinearConfig, seed: int):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the optimum is close enough for argmax
        return LogisticRegression(C=c, max_iter=config.max_iter, random_state=seed).fit(x, y)


def _lr_head(model, n_labels: int, encoder: str) -> Head:
    """The fitted LogisticRegression as a Head over all `n_labels` (its classes_ are label indices)."""
    weight = np.zeros((n_labels, model.coef_.shape[1]), dtype=np.float32)
    bias = np.full(n_labels, -1e4, dtype=np.float32)  # a label absent from this fit is never predicted
    if len(model.classes_) == 2:  # sklearn keeps one row for two classes: softmax([0, z]) = sigmoid(z)
        weight[model.classes_[1]], bias[model.classes_[1]] = model.coef_[0], model.intercept_[0]
        bias[model.classes_[0]] = 0.0
    else:
        weight[model.classes_], bias[model.classes_] = model.coef_, model.intercept_
    return Head(encoder=encoder, weight=weight, bias=bias)


def _pick_c(x: np.ndarray, y: np.ndarray, labels: list[str], config: LinearConfig, seed: int,
            encoder: str, progress: bool) -> tuple[float, dict]:
    """C with the best accuracy on a stratified held-out slice of the training data."""
    from tqdm import tqdm

    str_labels = [labels[i] for i in y]
    keep, held = stratified_split(str_labels, config.c_holdout, seed)
    if len(config.c_grid) == 1 or len(held) == 0:
        return config.c_grid[0], {}
    scores = {}
    for c in tqdm(config.c_grid, desc="choosing C", unit="fit", disable=not progress):
        head = _lr_head(_fit_lr(x[keep], y[keep], c, config, seed), len(labels), encoder)
        probs = head.probabilities(x[held])
        accuracy = float((probs.argmax(1) == y[held]).mean())
        log_loss = float(-np.log(np.maximum(probs[np.arange(len(held)), y[held]], 1e-12)).mean())
        scores[c] = (round(accuracy, 4), -round(log_loss, 4))
    best = max(scores, key=lambda c: scores[c])
    return best, {str(c): s[0] for c, s in scores.items()}


def _cross_val_probs(x: np.ndarray, y: np.ndarray, labels: list[str], c: float, config: LinearConfig,
                     seed: int, encoder: str, progress: bool) -> np.ndarray:
    """Out-of-fold probabilities for every training row: each from a head that did not see it."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed + 1)
    folds = np.zeros(len(y), dtype=int)
    for label in np.unique(y):  # stratified: every label spread over the folds
        idx = rng.permutation(np.flatnonzero(y == label))
        folds[idx] = (np.arange(len(idx)) + rng.integers(config.folds)) % config.folds
    probs = np.zeros((len(y), len(labels)))
    for k in tqdm(range(config.folds), desc="calibrating", unit="fold", disable=not progress):
        test = folds == k
        head = _lr_head(_fit_lr(x[~test], y[~test], c, config, seed), len(labels), encoder)
        probs[test] = head.probabilities(x[test])
    return probs


def _saved_spec(embedder: Embedder) -> str:
    """The embedder spec to record: a local directory as an absolute path, anything else as given."""
    path = Path(embedder.spec).expanduser()
    return str(path.resolve()) if embedder.spec != "bundled" and path.exists() else embedder.spec


def _train_linear(texts, labels, embedder: Embedder, seed, progress, config: LinearConfig,
                  calib: CalibrationConfig) -> IntentClassifier:
    embedder_spec = _saved_spec(embedder)
    label_set = sorted(set(labels))
    y = np.array([label_set.index(lab) for lab in labels])
    x = _encode(embedder, texts, progress)
    c, c_scores = _pick_c(x, y, label_set, config, seed, embedder_spec, progress)
    oof = _cross_val_probs(x, y, label_set, c, config, seed, embedder_spec, progress)
    threshold, calibration = calibrate_threshold(oof, labels, label_set, calib)
    head = _lr_head(_fit_lr(x, y, c, config, seed), len(label_set), embedder_spec)
    clf = IntentClassifier(label_set, [head], threshold, mode="linear",
                           info={"C": c, "C_scores": c_scores, "calibration": calibration})
    clf._encoders[embedder_spec] = HeadEncoder(embedder)
    return clf


# ----------------------------------------------------------------------------------- finetune mode


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
    from tqdm import tqdm

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
    with tqdm(total=total, desc="fine-tuning", unit="step", disable=not progress) as bar:
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
                    config: FinetuneConfig, calib: CalibrationConfig) -> IntentClassifier:
    embedder_spec = _saved_spec(embedder)
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
    encoder_dir = Path(tmp.name) / ENCODER_DIR
    model, weight = finetune_encoder([texts[i] for i in fit], y[fit], embedder.path,
                                     centroids, config, encoder_dir, seed, progress)
    tuned = Head(encoder=ENCODER_DIR, weight=(config.scale * weight).astype(np.float32),
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
    threshold, calibration = calibrate_threshold(probs, [labels[i] for i in held], label_set, calib)
    info.update(calibration=calibration, finetune=asdict(config))
    clf = IntentClassifier(label_set, heads, threshold, mode="finetune", encoder_dir=encoder_dir, info=info)
    clf._tmp = tmp
    clf._encoders[embedder_spec] = HeadEncoder(embedder)
    return clf


# -------------------------------------------------------------------------------------- evaluation


def evaluate(clf: IntentClassifier, texts: list[str], labels: list[str], out_dir: str | Path | None = None,
             progress: bool = False) -> dict:
    """Accuracy, macro-F1 and a per-intent report of `clf` on labelled data; with `out_of_scope` rows
    also in-scope accuracy (an out_of_scope prediction counts as wrong) and out-of-scope recall.

    With `out_dir`, writes confusion_matrix.png and report.json there.
    """
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    gold = [_label(lab) for lab in labels]
    started = time.perf_counter()
    predictions = clf.predict(texts, progress=progress)
    seconds = time.perf_counter() - started
    predicted = [p.label for p in predictions]
    names = sorted(set(gold) | set(predicted))
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=names,
                                                                     zero_division=0)
    gold_arr, pred_arr = np.array(gold), np.array(predicted)
    report = {
        "rows": len(gold),
        "accuracy": round(float((gold_arr == pred_arr).mean()), 4) if gold else 0.0,
        "macro_f1": round(float(f1_score(gold, predicted, labels=sorted(set(gold)), average="macro",
                                         zero_division=0)), 4) if gold else 0.0,
        "per_intent": {n: {"precision": round(float(p), 4), "recall": round(float(r), 4),
                           "f1": round(float(f), 4), "support": int(s)}
                       for n, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)},
        "top1_accuracy": round(float(np.mean([p.top[0][0] == g for p, g in zip(predictions, gold, strict=True)])),
                               4) if gold else 0.0,  # the best label, threshold ignored: the closed-set number
        "threshold": clf.threshold,
        "ms_per_message": round(1000 * seconds / max(1, len(gold)), 2),
    }
    oos = gold_arr == OUT_OF_SCOPE
    if oos.any():
        report["in_scope_accuracy"] = round(float((gold_arr == pred_arr)[~oos].mean()), 4) if (~oos).any() else 0.0
        report["out_of_scope_recall"] = round(float((pred_arr[oos] == OUT_OF_SCOPE).mean()), 4)
        report["out_of_scope_precision"] = round(float(oos[pred_arr == OUT_OF_SCOPE].mean()), 4) \
            if (pred_arr == OUT_OF_SCOPE).any() else 0.0
    if unknown := sorted(set(gold) - set(clf.labels) - {OUT_OF_SCOPE}):
        report["unknown_labels"] = unknown  # in the data but not in the model: always wrong
    pairs = Counter((g, p) for g, p in zip(gold, predicted, strict=True) if g != p)
    report["most_confused"] = [[g, p, n] for (g, p), n in pairs.most_common(10)]
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        draw_confusion_matrix(gold, predicted, names, out_dir / "confusion_matrix.png")
        report["confusion_matrix_png"] = str(out_dir / "confusion_matrix.png")
        (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return report


def draw_confusion_matrix(gold: list[str], predicted: list[str], names: list[str], path: Path) -> Path:
    """A row-normalised confusion matrix as a PNG (rows: true intent, columns: predicted), with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    index = {n: i for i, n in enumerate(names)}
    counts = np.zeros((len(names), len(names)), dtype=np.int64)
    for g, p in zip(gold, predicted, strict=True):
        counts[index[g], index[p]] += 1
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    cell = int(np.clip(900 // max(1, len(names)), 4, 28))
    font = ImageFont.load_default()
    show_names = cell >= 10
    margin = (8 + 6 * min(32, max(len(n) for n in names))) if show_names else 40
    size = margin + cell * len(names) + 10
    image = Image.new("RGB", (size, size + 24), "white")
    draw = ImageDraw.Draw(image)
    draw.text((6, size + 6), f"rows: true intent, columns: predicted ({len(gold)} messages, "
              "colour: share of the row)", fill="black", font=font)
    for i in range(len(names)):
        for j in range(len(names)):
            v = share[i, j]
            if i == j:  # correct: white to blue; errors: white to red
                colour = (int(255 * (1 - v)), int(255 * (1 - 0.6 * v)), 255)
            else:
                colour = (255, int(255 * (1 - min(1.0, 3 * v))), int(255 * (1 - min(1.0, 3 * v))))
            x0, y0 = margin + j * cell, margin + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(230, 230, 230))
            if cell >= 24 and counts[i, j]:
                draw.text((x0 + 2, y0 + cell // 3), str(counts[i, j]), fill="black", font=font)
    if show_names:
        for i, name in enumerate(names):
            label = name[:32]
            draw.text((4, margin + i * cell + (cell - 10) // 2), label, fill="black", font=font)
            tile = Image.new("RGB", (margin, cell), "white")
            ImageDraw.Draw(tile).text((4, (cell - 10) // 2), label, fill="black", font=font)
            image.paste(tile.rotate(90, expand=True), (margin + i * cell, 0))
    image.save(path)
    return path
