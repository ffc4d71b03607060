"""Accuracy, macro-F1, a per-intent report and a confusion matrix of a classifier on labelled data."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from assistant.understanding.intents.classifier import IntentClassifier
from assistant.understanding.intents.data import OUT_OF_SCOPE, _label


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
