"""Benchmark the intent classifier on public data sets: BANKING77 and CLINC150 (with out-of-scope).

    python -m assistant.tools.intents_bench                                   # both modes, both data sets
    python -m assistant.tools.intents_bench --mode linear --json runs/intents-bench.json
    python -m assistant.tools.intents_bench --only banking77 --mode finetune --epochs 3 --threads 1

BANKING77 ships a training split only: a fixed, seeded, stratified 80/20 split of it is made here,
every model is trained on the 80 (its own choices made on slices of the 80) and measured on the 20.
CLINC150: trained on train + oos_train, measured on val + oos_val, with the out-of-scope threshold
calibrated on training data only; the trade-off at other thresholds is printed for reference.
Reads `../shared/data` (or --data-root) and skips, saying so, when a folder is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from assistant.understanding.intents import (
    ENCODER_DIR,
    MODES,
    OUT_OF_SCOPE,
    IntentClassifier,
    evaluate,
    limit_threads,
    load_utterances,
)

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"
SPLIT_SEED = 0
# finetune epochs that keep one training run near 10 minutes on 2 busy CPU cores
DEFAULT_EPOCHS = {"BANKING77": 5.0, "CLINC150": 3.0}
CURVE_THRESHOLDS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class BenchResult:
    dataset: str
    mode: str
    train_rows: int
    test_rows: int
    accuracy: float  # the label the classifier returns, threshold applied
    top1_accuracy: float  # best label regardless of the threshold (the usual closed-set number)
    macro_f1: float
    threshold: float
    train_seconds: float  # training + saving (the fine-tuned encoder's ONNX export included)
    predict_p50_ms: float
    predict_p95_ms: float
    in_scope_accuracy: float | None = None
    out_of_scope_recall: float | None = None
    curve: list[dict] = field(default_factory=list)  # in-scope accuracy / OOS recall at other thresholds
    details: dict = field(default_factory=dict)  # the model's own choices: C, ensemble share, calibration


def banking77_split(path: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    """BANKING77 train.csv as a fixed stratified 80/20 (train, test) split."""
    from sklearn.model_selection import train_test_split

    texts, labels = load_utterances(path)
    train_idx, test_idx = train_test_split(np.arange(len(texts)), test_size=0.2, stratify=labels,
                                           random_state=SPLIT_SEED)
    return ([texts[i] for i in train_idx], [labels[i] for i in train_idx],
            [texts[i] for i in test_idx], [labels[i] for i in test_idx])


def latency_ms(clf: IntentClassifier, texts: list[str], n: int = 200) -> tuple[float, float]:
    """predict_one p50 and p95 in milliseconds over up to `n` messages, after a warm-up."""
    for text in texts[:5]:
        clf.predict_one(text)
    times = []
    for text in texts[:n]:
        started = time.perf_counter()
        clf.predict_one(text)
        times.append((time.perf_counter() - started) * 1000)
    return round(float(np.percentile(times, 50)), 2), round(float(np.percentile(times, 95)), 2)


def tradeoff(clf: IntentClassifier, texts: list[str], labels: list[str]) -> list[dict]:
    """In-scope accuracy and out-of-scope recall on (texts, labels) at each of CURVE_THRESHOLDS."""
    probs = clf.probabilities(texts)
    gold = np.array(labels)
    oos = gold == OUT_OF_SCOPE
    best = np.array(clf.labels)[probs.argmax(1)]
    confidence = probs.max(1)
    rows = []
    for t in CURVE_THRESHOLDS:
        predicted = np.where((confidence < t) | (best == OUT_OF_SCOPE), OUT_OF_SCOPE, best)
        rows.append({"threshold": t, "in_scope_accuracy": round(float((predicted == gold)[~oos].mean()), 4),
                     "out_of_scope_recall": round(float((predicted[oos] == OUT_OF_SCOPE).mean()), 4)})
    return rows


def run_one(dataset: str, mode: str, train: tuple[list[str], list[str]], test: tuple[list[str], list[str]],
            options: dict, curve: bool, keep: Path | None = None) -> BenchResult:
    """Train on `train`, save, load, and measure on `test`; `keep` names a folder to leave the model in."""
    started = time.time()
    if mode == "finetune":
        options = {"epochs": DEFAULT_EPOCHS.get(dataset, 3.0), **options}
    clf = IntentClassifier.train(*train, mode=mode, **(options if mode == "finetune" else {}))
    with tempfile.TemporaryDirectory(prefix="ra-intents-bench-") as tmp:
        where = keep / f"{dataset.lower()}-{mode}" if keep else Path(tmp)
        clf.save(where)  # predict through the saved model, as an application would
        train_seconds = round(time.time() - started, 1)
        clf = IntentClassifier.load(where)
        report = evaluate(clf, *test, progress=True)
        p50, p95 = latency_ms(clf, test[0])
        points = tradeoff(clf, *test) if curve else []
        if keep is None and (where / ENCODER_DIR).is_dir():  # its ONNX export is cached by path: drop it too
            from index.onnx_embed import quantized_model

            shutil.rmtree(quantized_model(where / ENCODER_DIR).parent, ignore_errors=True)
    result = BenchResult(dataset=dataset, mode=mode, train_rows=len(train[0]), test_rows=len(test[0]),
                         accuracy=report["accuracy"], top1_accuracy=report["top1_accuracy"],
                         macro_f1=report["macro_f1"], threshold=round(clf.threshold, 4),
                         train_seconds=train_seconds, predict_p50_ms=p50, predict_p95_ms=p95,
                         in_scope_accuracy=report.get("in_scope_accuracy"),
                         out_of_scope_recall=report.get("out_of_scope_recall"), curve=points,
                         details={k: v for k, v in clf.info.items() if k not in {"C_scores"}})
    print(f"  {dataset} {mode}: top-1 {result.top1_accuracy:.2%}, in-scope {result.in_scope_accuracy}, "
          f"OOS recall {result.out_of_scope_recall}, {train_seconds} s", flush=True)
    return result


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def markdown(results: list[BenchResult]) -> str:
    head = ("| data set | mode | top-1 accuracy | accuracy (threshold applied) | macro-F1 | in-scope accuracy "
            "| OOS recall | threshold | train s | predict_one p50 / p95 ms |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in results:
        lines.append(f"| {r.dataset} | {r.mode} | {_pct(r.top1_accuracy)} | {_pct(r.accuracy)} | "
                     f"{_pct(r.macro_f1)} | {_pct(r.in_scope_accuracy)} | {_pct(r.out_of_scope_recall)} | "
                     f"{r.threshold:.3f} | {r.train_seconds:.0f} | {r.predict_p50_ms:.1f} / {r.predict_p95_ms:.1f} |")
    for r in results:
        if r.curve:
            lines += ["", f"{r.dataset} {r.mode}: trade-off on the test data at fixed thresholds (for reference; "
                      "the table uses the threshold calibrated on training data)",
                      "| threshold | in-scope accuracy | OOS recall |", "|---|---|---|"]
            lines += [f"| {p['threshold']:.1f} | {_pct(p['in_scope_accuracy'])} | {_pct(p['out_of_scope_recall'])} |"
                      for p in r.curve]
    return "\n".join(lines)


def run_all(args: argparse.Namespace, options: dict) -> list[BenchResult]:
    """Every requested (data set, mode) whose data is present; a missing folder is reported and skipped."""
    results: list[BenchResult] = []
    b77 = args.data_root / "banking77" / "train.csv"
    if "banking77" in args.only:
        if b77.exists():
            x_train, y_train, x_test, y_test = banking77_split(b77)
            for mode in args.mode:
                results.append(run_one("BANKING77", mode, (x_train, y_train), (x_test, y_test), options, False,
                                       args.keep))
        else:
            print(f"skipping BANKING77: {b77} is absent")
    clinc = args.data_root / "clinc150" / "train_val.json"
    if "clinc150" in args.only:
        if clinc.exists():
            train, test = load_utterances(clinc, split="train"), load_utterances(clinc, split="val")
            for mode in args.mode:
                results.append(run_one("CLINC150", mode, train, test, options, True, args.keep))
        else:
            print(f"skipping CLINC150: {clinc} is absent")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m assistant.tools.intents_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder with banking77/ and clinc150/")
    p.add_argument("--mode", nargs="+", default=list(MODES), choices=MODES, help="modes to run (default: both)")
    p.add_argument("--only", nargs="+", default=["banking77", "clinc150"], choices=("banking77", "clinc150"))
    p.add_argument("--epochs", type=float, default=None,
                   help=f"finetune epochs (default: {', '.join(f'{k} {v:g}' for k, v in DEFAULT_EPOCHS.items())})")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for training (default: all; 1 is much faster on cores other jobs are using)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    p.add_argument("--keep", type=Path, default=None, help="leave the trained classifiers in this folder")
    args = p.parse_args(argv)

    options = {"epochs": args.epochs} if args.epochs is not None else {}
    with limit_threads(args.threads):
        results = run_all(args, options)
    if not results:
        print("nothing measured: no data sets found")
        return 0
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
    print(f"\n## Intent classifier ({time.strftime('%Y-%m-%d')}, {machine})\n")
    print(markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine,
                                         "options": options, "results": [asdict(r) for r in results]}, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
