"""Labelled utterances: reading CSV, JSONL and CLINC150 JSON files, and stratified splits."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np

from index.errors import UserError

OUT_OF_SCOPE = "out_of_scope"


TEXT_COLUMNS = ("text", "utterance")
LABEL_COLUMNS = ("label", "category", "intent")
OOS_ALIASES = {"oos": OUT_OF_SCOPE, "out-of-scope": OUT_OF_SCOPE}  # CLINC150 calls it `oos`


class IntentDataError(UserError, ValueError):
    """Training or evaluation data that cannot be used; the message names the file, line and fix."""


class ClassifierDirError(UserError, ValueError):
    """A directory that does not hold a saved intent classifier."""


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
