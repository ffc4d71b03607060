"""Training data: chat JSONL (`messages`), Alpaca-style JSONL (`instruction`, `input`, `output`) and CSV
question/answer files, checked row by row, tokenised with the model's chat template, with the loss on
the assistant's tokens only; then packed or grouped by length so that padding is not most of the work.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from index.errors import UserError

ROLES = {"system", "user", "assistant"}
IGNORE = -100
QUESTION_COLUMNS = ("question", "q", "prompt", "instruction", "query")
ANSWER_COLUMNS = ("answer", "a", "response", "output", "reply")


class DataError(UserError, ValueError):
    """Training data that cannot be used; the message says which file, which lines and why."""


@dataclass
class DataReport:
    files: list[str] = field(default_factory=list)
    rows: int = 0
    bad: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, reason)

    @property
    def good(self) -> int:
        return self.rows - len(self.bad)

    def summary(self, limit: int = 10) -> str:
        lines = [f"{self.good} of {self.rows} rows usable from {', '.join(self.files)}"]
        lines += [f"  {f}:{n}: {reason}" for f, n, reason in self.bad[:limit]]
        if len(self.bad) > limit:
            lines.append(f"  ... and {len(self.bad) - limit} more bad rows")
        return "\n".join(lines)


def _messages_from(obj, system_prompt: str | None) -> list[dict]:
    """One row as chat messages, or a ValueError saying what is wrong with it."""
    if not isinstance(obj, dict):
        raise ValueError("a row must be a JSON object")
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        out = []
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise ValueError("each message needs a role (system, user or assistant) and a string content")
            out.append({"role": m["role"], "content": m["content"]})
    elif "instruction" in obj and "output" in obj:
        if not all(isinstance(obj.get(k, ""), str) for k in ("instruction", "input", "output")):
            raise ValueError("'instruction', 'input' and 'output' must be strings")
        prompt = obj["instruction"].strip()
        if str(obj.get("input") or "").strip():
            prompt += "\n\n" + obj["input"].strip()
        out = [{"role": "user", "content": prompt}, {"role": "assistant", "content": obj["output"]}]
    else:
        raise ValueError("expected a 'messages' list, or 'instruction' and 'output'")
    if not any(m["role"] == "assistant" and m["content"].strip() for m in out):
        raise ValueError("no non-empty assistant message to learn from")
    if not any(m["role"] == "user" and m["content"].strip() for m in out):
        raise ValueError("no non-empty user message")
    if system_prompt and out[0]["role"] != "system":
        out.insert(0, {"role": "system", "content": system_prompt})
    return out


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if b"\x00" in raw[:4096]:
        raise DataError(f"{path} is a binary file, not JSONL or CSV text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from exc


def read_examples(paths: list[str | Path], system_prompt: str | None = None,
                  report: DataReport | None = None) -> tuple[list[list[dict]], DataReport]:
    """Every usable row of every file as chat messages; bad rows go into the report with line numbers."""
    report = report or DataReport()
    examples: list[list[dict]] = []
    for raw_path in paths:
        path = Path(raw_path)
        if not path.is_file():
            raise DataError(f"training data {path} does not exist")
        report.files.append(str(path))
        text = _read_text(path)
        suffix = path.suffix.lower()
        if suffix in {".jsonl", ".json"}:
            for line_no, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                report.rows += 1
                try:
                    examples.append(_messages_from(json.loads(line), system_prompt))
                except json.JSONDecodeError as exc:
                    report.bad.append((str(path), line_no, f"not valid JSON ({exc.msg})"))
                except ValueError as exc:
                    report.bad.append((str(path), line_no, str(exc)))
        elif suffix == ".csv":
            reader = csv.reader(io.StringIO(text))
            header = [h.strip().lower() for h in next(reader, [])]
            q = next((header.index(c) for c in QUESTION_COLUMNS if c in header), None)
            a = next((header.index(c) for c in ANSWER_COLUMNS if c in header), None)
            if q is None or a is None:
                raise DataError(f"{path}: a CSV needs a question column ({', '.join(QUESTION_COLUMNS)}) and an "
                                f"answer column ({', '.join(ANSWER_COLUMNS)}); found {header}")
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                report.rows += 1
                line_no = reader.line_num
                if len(row) <= max(q, a) or not row[q].strip() or not row[a].strip():
                    report.bad.append((str(path), line_no, "empty question or answer"))
                    continue
                examples.append(_messages_from({"instruction": row[q], "output": row[a]}, system_prompt))
        else:
            raise DataError(f"{path}: unsupported data file type '{suffix}' (use .jsonl or .csv)")
    if report.rows == 0:
        raise DataError(f"no rows in {', '.join(report.files)}")
    return examples, report


def check_bad_rows(report: DataReport, max_bad_fraction: float) -> None:
    """Stop before training when too many rows are bad (the report lists the first of them)."""
    if report.good == 0 or len(report.bad) > max_bad_fraction * report.rows:
        raise DataError(f"too many bad rows ({len(report.bad)} of {report.rows}, allowed "
                        f"{max_bad_fraction:.0%}); fix them or raise --max-bad-fraction\n{report.summary()}")


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]  # IGNORE outside the assistant's tokens

    @property
    def supervised(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


def _template_ids(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True,
                                        return_dict=False)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def tokenize_example(tokenizer, messages: list[dict], max_length: int) -> Tokenized | None:
    """Template tokens with labels on the assistant turns only; None when no answer token fits.

    An example longer than `max_length` loses the middle of its prompt (the start of the system turn
    and the end, where the answer is, are kept)."""
    full = _template_ids(tokenizer, messages, False)
    labels = [IGNORE] * len(full)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if i == 0:
            start = 0
        else:
            prompt = _template_ids(tokenizer, messages[:i], True)
            start = len(prompt) if full[:len(prompt)] == prompt else len(_template_ids(tokenizer, messages[:i], False))
        end = len(_template_ids(tokenizer, messages[:i + 1], False))
        labels[start:end] = full[start:end]
    if len(full) > max_length:  # cut the middle of the prompt: keep its start and everything near the answer
        head = min(64, max_length // 4)
        full = full[:head] + full[len(full) - (max_length - head):]
        labels = [IGNORE] * head + labels[len(labels) - (max_length - head):]
    if all(t == IGNORE for t in labels):
        return None
    return Tokenized(full, labels)


def tokenize_all(tokenizer, examples: list[list[dict]], max_length: int, progress: bool = False) -> list[Tokenized]:
    from tqdm import tqdm

    out = []
    for messages in tqdm(examples, desc="tokenizing", unit="ex", disable=not progress, leave=False):
        tok = tokenize_example(tokenizer, messages, max_length)
        if tok is not None:
            out.append(tok)
    return out


@dataclass
class Batch:
    input_ids: np.ndarray  # (rows, length)
    labels: np.ndarray
    attention_mask: np.ndarray
    position_ids: np.ndarray
    tokens: int  # real (non-padding) tokens
    packed: bool = False  # rows hold several examples, told apart by their restarting position ids


def _collate(rows: list[tuple[list[int], list[int], list[int]]], pad_id: int, packed: bool = False) -> Batch:
    length = max(len(ids) for ids, _, _ in rows)
    n = len(rows)
    ids = np.full((n, length), pad_id, dtype=np.int64)
    labels = np.full((n, length), IGNORE, dtype=np.int64)
    mask = np.zeros((n, length), dtype=np.int64)
    pos = np.zeros((n, length), dtype=np.int64)
    for r, (i, lab, p) in enumerate(rows):
        ids[r, :len(i)], labels[r, :len(i)], mask[r, :len(i)], pos[r, :len(i)] = i, lab, 1, p
    return Batch(ids, labels, mask, pos, int(mask.sum()), packed)


def make_batches(items: list[Tokenized], batch_size: int, pad_id: int, *, packing: bool, max_length: int,
                 group_by_length: bool, rng: np.random.Generator) -> list[Batch]:
    """One epoch of batches, in a shuffled order.

    packing: examples are concatenated into rows of exactly `max_length` tokens, no padding (but in
    the last row). Position ids restart at each example, and `batch_loss` builds the attention mask from
    them, so an example never attends to the one before it in its row.
    group_by_length: batches of similar-length examples, padded to the longest in the batch.
    """
    order = rng.permutation(len(items))
    if packing:
        rows, ids, labels, pos = [], [], [], []
        for k in order:
            item = items[k]
            ids += item.input_ids
            labels += [IGNORE] + item.labels[1:]  # never predict an example's first token from the previous one
            pos += list(range(len(item.input_ids)))
            while len(ids) >= max_length:
                rows.append((ids[:max_length], labels[:max_length], pos[:max_length]))
                ids, labels, pos = ids[max_length:], labels[max_length:], pos[max_length:]
        if ids:
            rows.append((ids, labels, pos))
        return [_collate(rows[i:i + batch_size], pad_id, packed=True) for i in range(0, len(rows), batch_size)]
    if group_by_length:
        window = batch_size * 50
        chunks = []
        for s in range(0, len(order), window):
            chunk = sorted(order[s:s + window], key=lambda k: len(items[k].input_ids))
            chunks += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
        rng.shuffle(chunks)
    else:
        chunks = [order[j:j + batch_size] for j in range(0, len(order), batch_size)]
    return [_collate([(items[k].input_ids, items[k].labels, list(range(len(items[k].input_ids))))
                      for k in chunk], pad_id) for chunk in chunks]


def split_eval(examples: list, fraction: float, max_eval: int, seed: int) -> tuple[list, list]:
    """(train, held-out) with a fixed seed; at least one held-out example when fraction > 0."""
    if fraction <= 0 or len(examples) < 2:
        return examples, []
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(examples))
    n_eval = min(max(1, int(round(fraction * len(examples)))), max_eval, len(examples) - 1)
    held = set(order[:n_eval].tolist())
    return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]
