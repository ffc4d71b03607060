"""Fit and measure the prompt-injection detector (assistant/compliance/injection.py).

    python -m assistant.tools.injection_fit fit               # both models, thresholds, writes injection_data/model.json
    python -m assistant.tools.injection_fit eval [--json OUT] [--no-medquad] [--no-public-messages]

`fit` trains two logistic models on the bundled embedder's vectors plus the hand-built features, each on
its own training file written for it (injection_data/train_documents.jsonl, train_messages.jsonl). Each
threshold is set MARGIN above the highest score of what the packs legitimately hold: every unit the index
screens in the packs' documents (their chunks, cut as index time cuts them) for the document model, every
customer message of the packs (intents.csv, dev/, eval/, fit/) for the message model; the packs therefore
give no false positive. The regularisation (GRID) is the one whose 5-fold cross-validated recall on the
training positives is highest at that threshold. Nothing here reads the paraphrase set.

`eval` reports, at those thresholds: the share of each paraphrase set (PARAPHRASE_SETS, never fitted on)
that is caught, document-level and message-level; their look-alikes wrongly flagged; false positives on every unit of the packs' documents
and, where ../shared/data is present, on MedQuAD's documents and on BANKING77 / CLINC150 customer messages.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from assistant.compliance.injection import (
    FEATURES,
    MODEL_PATH,
    InjectionDetector,
    Unit,
    features,
    split_units,
)
from index.chunk import ChunkConfig, chunk_document, tokenizer_counter
from index.embed import Embedder, resolve_embedder
from index.ingest import iter_files, load_document

ASSISTANT = Path(__file__).resolve().parent.parent  # assistant/
DATA = ASSISTANT / "compliance" / "injection_data"
PACKS = ASSISTANT / "packs"
SHARED = ASSISTANT.parent.parent / "shared" / "data"
MARGIN = 0.05  # the threshold sits this far above the packs' highest legitimate score
# (C, embedding scale, feature scale): a smaller embedding scale regularises the embedding block harder
GRID = [(c, ew, fw) for c in (0.3, 1.0, 3.0) for ew in (0.5, 1.0, 2.0) for fw in (3.0, 10.0)]
EMBEDDER = "bundled"
# paraphrases_dev: written after the training data, before the features were revised (its misses were looked
# at); paraphrases_test: written after the detector was frozen, measured once. Neither is fitted on.
PARAPHRASE_SETS = ("paraphrases_dev", "paraphrases_test")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def document_units(folders: list[Path], embedder: Embedder, progress: bool = False) -> list[tuple[str, Unit]]:
    """(file name, unit) for every unit of every chunk of the documents under `folders`, as index time
    screens them (chunked with the index's default settings)."""
    count = tokenizer_counter(embedder.tokenizer)
    out: list[tuple[str, Unit]] = []
    files = list(iter_files(folders))
    for n, path in enumerate(files, start=1):
        doc = load_document(path)
        for chunk in chunk_document(doc, count, ChunkConfig()):
            out += [(path.name, u) for u in split_units(chunk.text)]
        if progress and n % 100 == 0:
            print(f"  read {n}/{len(files)} documents", file=sys.stderr)
    return out


def pack_messages() -> list[str]:
    """Every customer message the packs hold: intents.csv and the questions of dev/, eval/ and fit/."""
    out: list[str] = []
    for pack in sorted(p for p in PACKS.iterdir() if (p / "pack.yaml").is_file()):
        with open(pack / "intents.csv", newline="", encoding="utf-8") as fh:
            out += [row["text"] for row in csv.DictReader(fh)]
        for path in sorted(pack.glob("*/*.jsonl")):
            for record in read_jsonl(path):
                out += [record[k] for k in ("question", "text") if isinstance(record.get(k), str)]
                out += [h for h in record.get("history", []) if isinstance(h, str)]
    return list(dict.fromkeys(m.strip() for m in out if m.strip()))


def public_messages() -> dict[str, list[str]]:
    """Customer messages from ../shared/data, where present: BANKING77 and CLINC150 (in and out of scope)."""
    out: dict[str, list[str]] = {}
    banking = SHARED / "banking77" / "train.csv"
    if banking.is_file():
        with open(banking, newline="", encoding="utf-8") as fh:
            out["BANKING77 train"] = [row["text"] for row in csv.DictReader(fh)]
    clinc = SHARED / "clinc150" / "train_val.json"
    if clinc.is_file():
        data = json.loads(clinc.read_text(encoding="utf-8"))
        out["CLINC150 train+val+oos"] = [t for split in ("train", "val", "oos_train", "oos_val") for t, _ in data[split]]
    return out


def design(embedder: Embedder, texts: list[str], hidden: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, hand-built features) of `texts`."""
    vectors = embedder.encode(texts)
    feats = np.stack([features(t, h) for t, h in zip(texts, hidden, strict=True)])
    return vectors, feats


def fit_head(train: tuple[np.ndarray, np.ndarray], y: np.ndarray, legit: tuple[np.ndarray, np.ndarray]) -> dict:
    """A logistic model over [embedding * ew, features * fw] (the two weights set how hard each block is
    regularised), its threshold just above the highest `legit` score. C, ew and fw are those of GRID with the
    best 5-fold cross-validated recall on the training positives at that threshold (fewer false positives
    among the training look-alikes breaking ties); the scales are folded into the weights."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    best = None
    for c, ew, fw in GRID:
        x = np.hstack([train[0] * ew, train[1] * fw])
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
        held_out = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
        model.fit(x, y)
        legit_scores = model.predict_proba(np.hstack([legit[0] * ew, legit[1] * fw]))[:, 1]
        threshold = float(legit_scores.max()) + MARGIN
        recall = float((held_out[y == 1] >= threshold).mean())
        false_pos = int((held_out[y == 0] >= threshold).sum())
        key = (recall, -false_pos)
        if best is None or key > best[0]:
            coef = np.concatenate([model.coef_[0][:train[0].shape[1]] * ew, model.coef_[0][train[0].shape[1]:] * fw])
            best = (key, {"coef": coef, "bias": float(model.intercept_[0]), "threshold": round(threshold, 4),
                          "C": c, "embedding_scale": ew, "feature_scale": fw, "cv_recall": round(recall, 4),
                          "cv_false_positives": false_pos, "legit_top": int(np.argmax(legit_scores)),
                          "legit_max": round(float(legit_scores.max()), 4)})
    return best[1]


def cmd_fit(args: argparse.Namespace) -> int:
    started = time.time()
    embedder = resolve_embedder(EMBEDDER)
    heads = {}
    print("packs: cutting every document into the units index time screens ...")
    legit_docs = document_units([PACKS / p.name / "docs" for p in sorted(PACKS.iterdir()) if (p / "docs").is_dir()],
                                embedder)
    legit_keys = list(dict.fromkeys((u.text, u.hidden) for _, u in legit_docs))
    legit_msgs = pack_messages()
    for name, train_file, legit_texts, legit_hidden in (
            ("document", "train_documents.jsonl", [t for t, _ in legit_keys], [h for _, h in legit_keys]),
            ("message", "train_messages.jsonl", legit_msgs, [False] * len(legit_msgs))):
        rows = read_jsonl(DATA / train_file)
        y = np.array([r["label"] for r in rows])
        head = fit_head(design(embedder, [r["text"] for r in rows], [bool(r.get("hidden")) for r in rows]), y,
                        design(embedder, legit_texts, legit_hidden))
        info = {k: v for k, v in head.items() if k not in ("coef", "bias", "threshold", "legit_top")}
        info.update(training_rows=len(rows), training_positives=int(y.sum()), pack_items=len(legit_texts),
                    pack_max_text=legit_texts[head["legit_top"]])
        heads[name] = {"coef": [round(float(c), 6) for c in head["coef"]], "bias": round(head["bias"], 6),
                       "threshold": head["threshold"], "fit": info}
        print(f"{name}: C={info['C']}, embedding x{info['embedding_scale']}, features x{info['feature_scale']}; "
              f"packs' highest score {info['legit_max']} ({info['pack_max_text'][:60]!r}) -> threshold "
              f"{head['threshold']}; cross-validated training recall {info['cv_recall']}, "
              f"false positives {info['cv_false_positives']}/{len(rows) - int(y.sum())}")
    model = {"embedder": EMBEDDER, "features": list(FEATURES), "margin": MARGIN,
             "fitted": time.strftime("%Y-%m-%d"), **heads}
    Path(args.out).write_text(json.dumps(model, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {time.time() - started:.0f} s")
    return 0


def _rate(flagged: int, total: int) -> str:
    return f"{flagged}/{total} ({100 * flagged / max(total, 1):.2f} %)"


def cmd_eval(args: argparse.Namespace) -> int:
    started = time.time()
    detector = InjectionDetector.load(resolve_embedder(EMBEDDER), args.model)
    results: dict[str, dict] = {}

    def document_caught(r: dict) -> bool:
        text = f"<!-- {r['text']} -->" if r.get("hidden") else r["text"]
        return bool(detector.flags(text))

    for name in PARAPHRASE_SETS:
        rows = read_jsonl(DATA / f"{name}.jsonl")
        for kind, check in (("document", document_caught),
                            ("message", lambda r: detector.is_injection_message(r["text"]))):
            for label, what in ((1, "injections caught"), (0, "look-alikes flagged")):
                part = [r for r in rows if r["kind"] == kind and r["label"] == label]
                hits = [r["text"] for r in part if check(r)]
                results[f"{name}, {kind}: {what}"] = {
                    "flagged": len(hits), "total": len(part), "rate": len(hits) / max(len(part), 1),
                    "examples": [r["text"] for r in part if (r["text"] in hits) != bool(label)][:12]}

    def documents(name: str, folders: list[Path]) -> None:
        units = document_units(folders, detector.embedder, progress=True)
        keys = list(dict.fromkeys((u.text, u.hidden) for _, u in units))
        found = detector.unit_scores([Unit(0, 0, 0, t, h) for t, h in keys])
        score = dict(zip(keys, found, strict=True))
        flagged = [(f, u.text, float(score[(u.text, u.hidden)])) for f, u in units
                   if score[(u.text, u.hidden)] >= detector.document.threshold]
        distinct = {t for _, t, _ in flagged}
        results[f"{name}: units flagged"] = {"flagged": len(distinct), "total": len(keys),
                                             "rate": len(distinct) / max(len(keys), 1),
                                             "files": len({f for f, _, _ in flagged}),
                                             "examples": sorted({(f, t, round(s, 3)) for f, t, s in flagged},
                                                                key=lambda e: -e[2])[:15]}

    documents("packs' documents", [p / "docs" for p in sorted(PACKS.iterdir()) if (p / "docs").is_dir()])
    if not args.no_medquad and (SHARED / "medquad_dev" / "docs").is_dir():
        documents("MedQuAD documents", [SHARED / "medquad_dev" / "docs"])

    message_sets = {"packs' customer messages": pack_messages()}
    if not args.no_public_messages:
        message_sets.update(public_messages())
    for name, messages in message_sets.items():
        threshold = detector.message.threshold
        found = [m for m, score in zip(messages, detector.message_scores(messages), strict=True) if score >= threshold]
        results[f"{name}: flagged"] = {"flagged": len(found), "total": len(messages),
                                       "rate": len(found) / max(len(messages), 1), "examples": found[:12]}

    print(f"{'set':<58} {'flagged':>22}")
    for name, r in results.items():
        print(f"{name:<58} {_rate(r['flagged'], r['total']):>22}")
        for example in r["examples"][: 6 if args.verbose else 3]:
            print(f"    {example}")
    print(f"thresholds: document {detector.document.threshold}, message {detector.message.threshold}; "
          f"model {detector.id}; {time.time() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": detector.id, "thresholds": {
            "document": detector.document.threshold, "message": detector.message.threshold},
            "results": results}, indent=1, default=str) + "\n", encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m assistant.tools.injection_fit", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit both models and their thresholds")
    f.add_argument("--out", default=str(MODEL_PATH), help="where the model goes (default: %(default)s)")
    f.set_defaults(func=cmd_fit)
    e = sub.add_parser("eval", help="catch rate on the paraphrase set, false positives on packs, MedQuAD, public messages")
    e.add_argument("--model", default=str(MODEL_PATH))
    e.add_argument("--json", default=None, help="also write the results here")
    e.add_argument("--no-medquad", action="store_true", help="skip MedQuAD's documents (the slow part)")
    e.add_argument("--no-public-messages", action="store_true", help="skip BANKING77 and CLINC150")
    e.add_argument("--verbose", action="store_true", help="more examples per line")
    e.set_defaults(func=cmd_eval)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
