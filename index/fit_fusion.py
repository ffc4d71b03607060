"""Fit the adaptive hybrid fusion (FusionConfig.bias and coefs) on MedQuAD dev's even-numbered questions.

    python -m index.fit_fusion [--data ../shared/data/medquad_dev] [--seed 0] [--l2 0.001]
    python -m index.bench --part quality --fit          # fit, then report with the fitted parameters

Training set: every even-numbered question as written, plus a consumer-style rewrite of each
(index/noisy.py). Each question's nDCG@10 is measured at every dense weight on a grid (0, 0.05 .. 1);
the fit chooses the logistic model `weight = sigmoid(bias + coefs . features)` whose per-query weights
give the best mean nDCG@10 (read off the grid, linearly interpolated), less a small L2 penalty on the
standardised coefficients, by Nelder-Mead from a few starts. The odd-numbered questions and the
hand-written noisy set are left for `make bench-index` to report on.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.evaluate import doc_metrics, load_questions
from index.noisy import noisy_questions
from index.search import FEATURES, Candidates, FusionConfig, Searcher

GRID = np.round(np.linspace(0, 1, 21), 2)
DEPTH = 30  # hits ranked per question, as index.evaluate fetches them


@dataclass
class GridTable:
    """Per question: its fusion features and its nDCG@10 at each dense weight of GRID."""

    features: np.ndarray  # (questions, len(FEATURES))
    ndcg: np.ndarray  # (questions, len(GRID))


def grid_table(searcher: Searcher, questions: list[dict], batch: int = 256) -> GridTable:
    """Score every question at every grid weight (ranking as Searcher.search_many(k=DEPTH) does)."""
    store = searcher.store
    records = store.chunks(range(len(store)))
    sources = [records[r]["source"] for r in range(len(store))]
    hashes = [records[r]["content_hash"] for r in range(len(store))]
    features, ndcg = [], []
    for start in range(0, len(questions), batch):
        part = questions[start:start + batch]
        for q, cand in zip(part, searcher.hybrid_candidates([q["question"] for q in part], k=DEPTH), strict=True):
            features.append(cand.features)
            ndcg.append([_ndcg(cand, w, sources, hashes, set(q["relevant"])) for w in GRID])
    return GridTable(np.array(features), np.array(ndcg))


def _ndcg(cand: Candidates, weight: float, sources: list[str], hashes: list[str], relevant: set[str]) -> float:
    fused = cand.fused(weight)
    ranked, seen = [], set()
    for j in np.argsort(-fused, kind="stable"):
        row = int(cand.rows[j])
        if cand.cosines[j] < 0 or hashes[row] in seen:  # search's min_score=0 and one hit per distinct text
            continue
        seen.add(hashes[row])
        ranked.append(sources[row])
        if len(ranked) == DEPTH:
            break
    return doc_metrics(ranked, relevant)["ndcg@10"]


def mean_ndcg(table: GridTable, weights: np.ndarray) -> float:
    """Mean nDCG@10 when each question gets its own dense weight (interpolated between grid points)."""
    pos = np.clip(weights, 0, 1) * (len(GRID) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(GRID) - 2)
    frac = pos - lo
    rows = np.arange(len(weights))
    return float(np.mean((1 - frac) * table.ndcg[rows, lo] + frac * table.ndcg[rows, lo + 1]))


def fit(table: GridTable, l2: float = 0.001, starts: int = 8, seed: int = 0) -> FusionConfig:
    """The FusionConfig whose adaptive weights maximise mean nDCG@10 on `table` (see module doc)."""
    bias, coefs = fit_logistic(table, l2, starts, seed)
    return FusionConfig(adaptive=True, bias=round(bias, 4), coefs=tuple(round(float(c), 4) for c in coefs))


def fit_logistic(table: GridTable, l2: float = 0.001, starts: int = 8, seed: int = 0) -> tuple[float, np.ndarray]:
    """(bias, coefs) on the raw features; fitted on standardised ones, so that the penalty treats them alike.

    The mean nDCG is piecewise linear in each weight and flat in places (no useful gradient), hence Nelder-Mead, from
    zero (the 50/50 fusion) and from seeded random starts; the result is the same on every run.
    """
    # scipy comes with sentence-transformers; only this offline fit needs it
    from scipy.optimize import minimize

    mean, std = table.features.mean(0), table.features.std(0) + 1e-9
    z = (table.features - mean) / std

    def loss(theta: np.ndarray) -> float:
        weights = 1 / (1 + np.exp(-(theta[0] + z @ theta[1:])))
        return -mean_ndcg(table, weights) + l2 * float(theta[1:] @ theta[1:])

    rng = np.random.default_rng(seed)
    size = 1 + z.shape[1]
    inits = [np.zeros(size)] + [rng.normal(0, 1.5, size) for _ in range(starts - 1)]
    options = {"maxiter": 4000, "xatol": 1e-4, "fatol": 1e-7}
    theta = min((minimize(loss, x0, method="Nelder-Mead", options=options) for x0 in inits), key=lambda r: r.fun).x
    coefs = theta[1:] / std
    return float(theta[0] - coefs @ mean), coefs


def training_questions(data: Path, seed: int = 0) -> list[dict]:
    """Even-numbered questions, clean and rewritten (index/noisy.py) with `seed`."""
    even = load_questions(data / "questions.jsonl")[0::2]
    return even + noisy_questions(even, seed)


def report(table: GridTable, config: FusionConfig, n_clean: int) -> str:
    """Training-set nDCG@10 of fixed weights and of the fitted adaptive weights, clean and noisy halves."""
    weights = np.array([config.weight(f) for f in table.features])
    lines = [f"{'training set':<14}{'w=0 (bm25)':>12}{'w=1 (dense)':>12}{'w=0.5':>8}{'adaptive':>10}{'mean w':>8}"]
    for name, part in (("clean even", slice(0, n_clean)), ("noisy even", slice(n_clean, None))):
        sub = GridTable(table.features[part], table.ndcg[part])
        lines.append(f"{name:<14}{sub.ndcg[:, 0].mean():>12.4f}{sub.ndcg[:, -1].mean():>12.4f}"
                     f"{sub.ndcg[:, 10].mean():>8.4f}{mean_ndcg(sub, weights[part]):>10.4f}{weights[part].mean():>8.2f}")
    return "\n".join(lines)


def run_fit(searcher: Searcher, data: Path, seed: int = 0, l2: float = 0.001) -> FusionConfig:
    """Fit on the even-numbered questions of `data` and print the parameters and training numbers."""
    questions = training_questions(data, seed)
    print(f"fitting the adaptive fusion on {len(questions)} questions (even-numbered, clean + noisy, seed {seed})")
    table = grid_table(searcher, questions)
    config = fit(table, l2=l2, seed=seed)
    print(report(table, config, len(questions) // 2))
    print("\nparameters (paste into FusionConfig in index/search.py):")
    print(f"    bias: float = {config.bias}")
    print(f"    coefs: tuple[float, ...] = {config.coefs}  # {', '.join(FEATURES)}")
    return config


def main(argv: list[str] | None = None) -> int:
    from index.bench import DEFAULT_DATA, medquad_index
    from index.embed import Embedder
    from index.quiet import quiet_libraries

    p = argparse.ArgumentParser(prog="python -m index.fit_fusion", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder like ../shared/data/medquad_dev")
    p.add_argument("--seed", type=int, default=0, help="seed of the noisy rewrites")
    p.add_argument("--l2", type=float, default=0.001, help="penalty on the standardised coefficients")
    args = p.parse_args(argv)
    if not (args.data / "questions.jsonl").is_file():
        p.error(f"no MedQuAD dev set at {args.data}: pass --data FOLDER (with docs/ and questions.jsonl)")
    quiet_libraries()
    embedder = Embedder()
    store, _ = medquad_index(args.data, embedder)
    run_fit(Searcher(store, embedder), args.data, args.seed, args.l2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
