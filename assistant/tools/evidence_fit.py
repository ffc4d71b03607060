"""`python -m assistant fit-evidence`: fit the evidence selector's mix and answerable threshold.

Fitted only on the packs' `eval/` and `fit/` sets (answerable questions with their expected facts, and
in-domain questions the documents do not answer; `fit/` is customer-phrased), never on the `dev/` sets
that `make eval` reports on. For each
question the passage pool and every unit's signals are computed once; then a grid of weights is scored:
- hit: the best unit holds an expected fact;
- the threshold is the highest that keeps at most `max_refused` of the answerable questions answered,
  and the unanswerable questions whose best unit falls below it count as refused.
The objective is hit rate + 0.5 × unanswerable refused. Prints the best weights as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import asdict, replace

import numpy as np

from index.errors import SettingError

SIGNALS = ("dense", "sentence", "passage", "lexical", "kind")
CAUTION_FLAGGED = (0.08, 0.30, 0.43)  # relaxed, cautious, strict: shares of answerable questions flagged


def _read(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path.exists() else []


def collect(bot, split: str = "eval") -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """Signals of every unit in the pool of each answerable question (with which hold a fact), and of
    each unanswerable question."""
    config = bot.config
    floor = config.pool_min_score

    def signals(question: str):
        pool = bot.searcher.search(question, k=config.pool_k, min_score=floor, mode=config.search_mode)
        rows = bot.selector.score(question, pool)
        if not rows:
            return np.zeros((0, len(SIGNALS))), []
        return np.array([[r[3][s] for s in SIGNALS] for r in rows]), [r[2] for r in rows]

    answerable = []
    for q in _read(bot.pack.root / split / "questions.jsonl"):
        x, texts = signals(q["question"])
        facts = [f.lower() for f in q["expected"]]
        answerable.append((x, np.array([any(f in t.lower() for f in facts) for t in texts], dtype=bool)))
    unanswerable = [signals(q["question"])[0] for q in _read(bot.pack.root / split / "unanswerable.jsonl")]
    return answerable, unanswerable


def collect_features(bot, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Answerability features (evidence.ANSWERABLE_FEATURES, then the judge's probability where the selector has
    a judge) of each question, with 1 = answerable."""
    config = bot.config
    floor = config.pool_min_score
    xs, ys = [], []
    for name, label in (("questions.jsonl", 1), ("unanswerable.jsonl", 0)):
        for q in _read(bot.pack.root / split / name):
            pool = bot.searcher.search(q["question"], k=config.pool_k, min_score=floor, mode=config.search_mode)
            ranked = bot.selector.score(q["question"], pool)
            if ranked:
                x = list(bot.selector.features(q["question"], ranked, pool))
                if bot.selector.judge is not None:  # the judge's own probability: one more feature
                    x.append(bot.selector.judge.probability(q["question"], pool))
                xs.append(x)
                ys.append(label)
    return np.array(xs), np.array(ys)


def fit_answerable(x: np.ndarray, y: np.ndarray, max_refused: float, max_flagged: float = 0.0,
                   calibrate: np.ndarray | None = None, floor: float = 0.0) -> dict:
    """A logistic model answerable-vs-not, and two probability thresholds: below `prob` a question is
    refused, below `flag_prob` its evidence is shown as the closest the documents come. They refuse at most
    `max_refused` and flag at most `max_flagged` of the answerable questions in `calibrate` (a mask: the
    customer-phrased ones, whose scores run lower than those of questions written beside the code), on
    cross-validated probabilities. A question whose best unit scores below `floor` is refused whatever its
    probability, and counts among the refused."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    calibrate = np.ones(len(y), dtype=bool) if calibrate is None else calibrate
    model = LogisticRegression(C=1.0, max_iter=5000)
    probs = np.mean([cross_val_predict(model, x, y, method="predict_proba",
                                       cv=StratifiedKFold(5, shuffle=True, random_state=seed))[:, 1]
                     for seed in range(5)], axis=0)
    probs[x[:, 0] < floor] = 0.0  # feature 0 is the best unit's score
    answerable = probs[(y == 1) & calibrate]
    threshold = float(np.quantile(answerable, max_refused))
    flag = float(np.quantile(answerable, max_refused + max_flagged)) if max_flagged else 0.0
    model.fit(x, y)
    out = {"coef": [round(float(c), 4) for c in model.coef_[0]], "bias": round(float(model.intercept_[0]), 4),
           "prob": round(threshold, 4), "flag_prob": round(flag, 4), "answerable_above": floor,
           # the flag thresholds of the `caution` levels relaxed, cautious and strict: where they flag
           # `CAUTION_FLAGGED` of the calibration set's answerable questions
           "caution_probs": [round(float(np.quantile(answerable, max_refused + share)), 4)
                             for share in CAUTION_FLAGGED]}
    for name, mask in (("all", np.ones(len(y), dtype=bool)), ("calibration set", calibrate)):
        a, u = probs[(y == 1) & mask], probs[(y == 0) & mask]
        out[name] = {"answerable_refused": round(float((a < threshold).mean()), 3),
                     "answerable_flagged": round(float(((a >= threshold) & (a < flag)).mean()), 3),
                     "unanswerable_refused": round(float((u < threshold).mean()), 3),
                     "unanswerable_refused_or_flagged": round(float((u < max(flag, threshold)).mean()), 3)}
    return out


def evaluate_weights(w: np.ndarray, answerable, unanswerable, max_refused: float) -> dict:
    tops, hits = [], []
    for x, holds in answerable:
        if len(x) == 0:
            tops.append(-1.0)
            hits.append(False)
            continue
        s = x @ w
        best = int(s.argmax())
        tops.append(float(s[best]))
        hits.append(bool(holds[best]))
    tops_arr = np.array(tops)
    threshold = float(np.quantile(tops_arr, max_refused)) if len(tops_arr) else 0.0
    answered = tops_arr >= threshold
    u_tops = np.array([float((x @ w).max()) if len(x) else -1.0 for x in unanswerable])
    refused = float((u_tops < threshold).mean()) if len(u_tops) else 0.0
    hit = float((np.array(hits) & answered).mean())
    return {"hit": hit, "unanswerable_refused": refused, "threshold": threshold,
            "answerable_refused": float((~answered).mean()), "objective": hit + 0.5 * refused}


def chosen_hits(w: np.ndarray, answerable, within: float, most: int) -> dict:
    """With the units scoring within `within` of the best kept (at most `most`): how often one holds the fact."""
    hits, sizes = 0, []
    for x, holds in answerable:
        if len(x) == 0:
            continue
        s = x @ w
        order = np.argsort(-s)[:most]
        kept = [j for j in order if s[j] >= s[order[0]] - within]
        hits += bool(holds[kept].any())
        sizes.append(len(kept))
    return {"hit": round(hits / max(len(answerable), 1), 3), "mean_items": round(float(np.mean(sizes)), 2)}


def fit(answerable, unanswerable, max_refused: float = 0.08, step: float = 0.1) -> tuple[np.ndarray, dict]:
    grid = np.round(np.arange(0, 1 + 1e-9, step), 3)
    best = None
    for combo in itertools.product(grid, repeat=len(SIGNALS)):
        w = np.array(combo)
        if abs(w.sum() - 1.0) > 1e-6 and not (w[-1] > 0 and abs(w[:-1].sum() - 1.0) < 1e-6):
            continue  # weights of the cosine/lexical signals sum to 1; `kind` is a bonus on top
        result = evaluate_weights(w, answerable, unanswerable, max_refused)
        if best is None or result["objective"] > best[1]["objective"] + 1e-9:
            best = (w, result)
    return best


def main(args: argparse.Namespace) -> int:
    from assistant.answering.evidence import EvidenceWeights
    from assistant.config import AssistantConfig
    from assistant.pipeline import Assistant
    from index.embed import resolve_embedder

    args.split = args.split or ["eval", "fit", "fit2"]
    if {"dev", "dev2"} & set(args.split):
        raise SettingError("dev/ and dev2/ are the reporting sets: fitting on them would flatter every number")
    embedder = resolve_embedder("bundled")
    answerable, unanswerable = [], []
    for domain in args.domain or ["bank", "hospital"]:
        bot = Assistant(AssistantConfig.load(domain=domain, answer_mode="quote"), embedder=embedder)
        for split in args.split:
            a, u = collect(bot, split)
            answerable += a
            unanswerable += u
    shipped = EvidenceWeights()
    if args.answerable:
        xs, ys, customer = [], [], []
        for domain in args.domain or ["bank", "hospital"]:
            bot = Assistant(AssistantConfig.load(domain=domain, answer_mode="quote"), embedder=embedder)
            for split in args.split:
                x, y = collect_features(bot, split)
                xs.append(x)
                ys.append(y)
                customer.append(np.full(len(y), split.startswith("fit")))  # fit/, fit2/...: customer-phrased
        calibrate = np.concatenate(customer)
        result = fit_answerable(np.concatenate(xs), np.concatenate(ys), args.max_refused, args.max_flagged,
                                calibrate if calibrate.any() else None, args.floor)
        print(json.dumps(result))
        return 0
    w0 = np.array([getattr(shipped, s) for s in SIGNALS])
    print("shipped:", json.dumps(evaluate_weights(w0, answerable, unanswerable, args.max_refused)))
    w, result = fit(answerable, unanswerable, args.max_refused)
    fitted = replace(shipped, **dict(zip(SIGNALS, map(float, w), strict=True)),
                     answerable_above=round(result["threshold"], 3))
    print("fitted:", json.dumps(result))
    for within in (0.0, 0.03, 0.06, 0.1, 0.15):
        for most in (2, 3, 4):
            print(f"keep_within {within}, max_items {most}:",
                  json.dumps(chosen_hits(w0, answerable, within, most)))
    print(json.dumps(asdict(fitted)))
    return 0


def add_fit_evidence_command(sub) -> None:
    p = sub.add_parser("fit-evidence", help="fit the evidence selector on the packs' eval/ sets (never dev/)")
    p.add_argument("--domain", action="append", help="repeatable; default: bank and hospital")
    p.add_argument("--split", action="append", default=None,
                   help="question sets to fit on (repeatable; default: eval and fit); never dev")
    p.add_argument("--answerable", action="store_true",
                   help="fit the answerable-or-not model on the current mix instead of the mix itself")
    p.add_argument("--max-refused", type=float, default=0.08,
                   help="share of answerable questions the threshold may refuse (with --answerable: the "
                        "customer-phrased fit/ ones; the shipped refusal threshold is their 2 %% quantile)")
    p.add_argument("--floor", type=float, default=0.35,
                   help="with --answerable: a best unit below this score is refused whatever the model says")
    p.add_argument("--max-flagged", type=float, default=0.14,
                   help="with --answerable: share of answerable customer-phrased (fit/) questions that may be "
                        "shown as the closest the documents come")
    p.set_defaults(func=main)
