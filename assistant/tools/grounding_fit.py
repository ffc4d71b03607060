"""Re-fit the grounding check's weights and thresholds to one model's answers.

The shipped weights (assistant/answering/grounding.py) were fitted to the bundled model's answers. A fine-tuned
or different model writes differently, and the same thresholds then let more unanswerable questions
through (README, "Does the adapter make the assistant better?"). So, for any model you deploy:

    python -m assistant eval --domain bank --model M --adapter A --dump bank.jsonl
    python -m assistant eval --domain hospital --model M --adapter A --dump hospital.jsonl
    python -m assistant fit-grounding bank.jsonl --check hospital.jsonl --out grounding.json
    python -m assistant ask "..." --model M --adapter A --grounding grounding.json

Written as grounding.json into an adapter's directory, the weights go wherever the adapter goes (the
CLI, the UI's adapter setting) without --grounding.

The fit replays every dumped answer's check parts (intent confidence, retrieval strength, coverage,
support, unsupported figures) under a grid of weights and thresholds. The rule: at most 5 % of
answerable questions refused; then as many unanswerable and document-removed questions flagged
(refused or given a caveat) as possible, up to the 90 % target; then the fewest caveats on
answerable answers; then the most unanswerable ones refused outright.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from assistant.answering.grounding import GroundingWeights
from index.errors import SettingError, UserError

WEIGHT_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
REFUSE_GRID = np.round(np.arange(0.0, 0.70, 0.025), 3)
CAVEAT_GRID = np.round(np.arange(0.30, 0.95, 0.025), 3)
KINDS = ("answerable", "unanswerable", "removed")
ADAPTER_FILE = "grounding.json"  # in an adapter directory: used whenever that adapter is


class FitError(UserError, ValueError):
    """The dump cannot be fitted; the message says why."""


class Answers:
    """The dumped answers as arrays. Answers the check did not run on (routed elsewhere, or declined
    for lack of passages) keep the outcome they had."""

    def __init__(self, rows: list[dict]):
        rows = [r for r in rows if r.get("kind") in KINDS]
        if not rows:
            raise FitError("no answers in the dump: make it with `python -m assistant eval --dump FILE`")
        checked = [bool(r.get("checks")) and "support" in r["checks"] for r in rows]  # the check ran
        self.kind = np.array([r["kind"] for r in rows])
        self.checked = np.array(checked, dtype=bool)
        self.parts = np.array([[1.0 if r.get("intent_confidence") is None else r["intent_confidence"],
                                r["checks"]["retrieval"], r["checks"]["coverage"], r["checks"]["support"]]
                               if ok else [0.0] * 4 for r, ok in zip(rows, checked, strict=True)])
        self.figures = np.array([bool(ok and r["checks"].get("figures", 0)) for r, ok in zip(rows, checked,
                                                                                               strict=True)])
        self.empty = np.array([bool(ok and r["checks"].get("empty", 0)) for r, ok in zip(rows, checked, strict=True)])
        # as `eval` counts them: an answerable question is refused only by the check; an unanswerable one
        # is also declined when no answer was grounded (routed elsewhere, no passages found)
        self.fixed_refused = np.array([bool(r["refused"] or (r["kind"] != "answerable" and not r.get("grounded", True)))
                                       for r in rows])
        self.fixed_caveat = np.array([bool(r["caveat"]) for r in rows])
        if not (self.kind == "answerable").any() or not (self.kind != "answerable").any():
            raise FitError("the dump needs answerable and unanswerable (or document-removed) answers: "
                           "dump a whole `eval` run, not --limit 0")

    def __len__(self) -> int:
        return len(self.kind)

    def outcomes(self, weights: np.ndarray, refuse_below: float, caveat_below: float,
                 figure_caveat: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(refused, caveat) per answer, for weight rows (W x 4) -> arrays (W x N)."""
        weights = np.atleast_2d(weights)
        conf = (weights @ self.parts.T) / weights.sum(axis=1, keepdims=True)
        refused = (conf < refuse_below) | self.empty
        caveat = ~refused & ((conf < caveat_below) | (self.figures & figure_caveat))
        refused = np.where(self.checked, refused, self.fixed_refused)
        caveat = np.where(self.checked, caveat, self.fixed_caveat)
        return refused, caveat

    def rates(self, refused: np.ndarray, caveat: np.ndarray) -> dict[str, np.ndarray]:
        answerable = self.kind == "answerable"
        other = ~answerable
        unanswerable, removed = self.kind == "unanswerable", self.kind == "removed"
        flagged = refused | caveat

        def share(values, mask):
            return values[..., mask].mean(axis=-1) if mask.any() else np.zeros(values.shape[:-1])

        return {"answerable_refused": share(refused, answerable), "answerable_caveat": share(caveat, answerable),
                "unanswerable_flagged": share(flagged, unanswerable), "removed_flagged": share(flagged, removed),
                "unanswerable_refused": share(refused, unanswerable), "removed_refused": share(refused, removed),
                "flagged": share(flagged, other), "refused": share(refused, other)}


def fit(answers: Answers, max_refused: float = 0.05, target: float = 0.90) -> tuple[GroundingWeights, dict]:
    """The best weights and thresholds under the rule in the module docstring, and their rates."""
    grid = np.array([w for w in itertools.product(WEIGHT_GRID, repeat=4) if sum(w) > 0])
    best, best_score = None, -np.inf
    for refuse_below in REFUSE_GRID:
        for caveat_below in CAVEAT_GRID[CAVEAT_GRID >= refuse_below]:
            rates = answers.rates(*answers.outcomes(grid, refuse_below, caveat_below))
            score = (np.minimum(rates["flagged"], target) * 1e6 + (1 - rates["answerable_caveat"]) * 1e3
                     + rates["refused"])
            score[rates["answerable_refused"] > max_refused] = -np.inf
            i = int(np.argmax(score))
            if score[i] > best_score:
                best_score, best = score[i], (grid[i], float(refuse_below), float(caveat_below))
    if best is None:
        raise FitError(f"no setting refuses at most {max_refused:.0%} of the answerable questions")
    w, refuse_below, caveat_below = best
    weights = GroundingWeights(intent=float(w[0]), retrieval=float(w[1]), coverage=float(w[2]),
                               support=float(w[3]), refuse_below=refuse_below, caveat_below=caveat_below)
    return weights, score_weights(answers, weights)


def score_weights(answers: Answers, weights: GroundingWeights) -> dict[str, float]:
    """The rates these weights give on these answers."""
    vector = np.array([weights.intent, weights.retrieval, weights.coverage, weights.support])
    rates = answers.rates(*answers.outcomes(vector, weights.refuse_below, weights.caveat_below,
                                            weights.figure_caveat))
    return {k: round(float(v[0]), 4) for k, v in rates.items()}


def read_dump(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise FitError(f"cannot read {path}: {exc.strerror}") from exc
        for n, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise FitError(f"{path}:{n}: not JSON ({exc.msg}); pass the file `eval --dump` wrote") from exc
    return rows


def load_weights(path: str | Path) -> GroundingWeights:
    """The weights a fit wrote (`--grounding FILE`), checked."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingError(f"--grounding {path}: cannot read it ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise SettingError(f"--grounding {path}: not JSON ({exc.msg}); pass the file fit-grounding wrote") from exc
    values = data.get("weights") if isinstance(data, dict) else None
    names = {f.name for f in fields(GroundingWeights)}
    if not isinstance(values, dict) or not set(values) <= names:
        raise SettingError(f"--grounding {path}: no valid \"weights\" object; pass the file fit-grounding wrote")
    weights = GroundingWeights(**values)
    if weights.intent + weights.retrieval + weights.coverage + weights.support <= 0 or \
            not 0 <= weights.refuse_below <= weights.caveat_below <= 1:
        raise SettingError(f"--grounding {path}: the weights must not all be 0 and 0 <= refuse_below <= "
                         "caveat_below <= 1")
    return weights


def grounding_weights(config) -> GroundingWeights | None:
    """The weights an AssistantConfig asks for: --grounding FILE, else an adapter's own grounding.json
    (fitted to the answers of the model with that adapter), else None (the shipped ones)."""
    if config.grounding:
        return load_weights(config.grounding)
    if config.adapter and (Path(config.adapter) / ADAPTER_FILE).is_file():
        return load_weights(Path(config.adapter) / ADAPTER_FILE)
    return None


def _table(rows: dict[str, dict[str, float]]) -> str:
    names = list(rows)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in ("answerable_refused", "answerable_caveat", "unanswerable_flagged", "removed_flagged",
                "unanswerable_refused", "removed_refused"):
        lines.append(f"| {key.replace('_', ': ', 1)} | " + " | ".join(f"{rows[n][key]:.0%}" for n in names) + " |")
    return "\n".join(lines)


def add_fit_command(sub) -> None:
    p = sub.add_parser("fit-grounding", help="re-fit the grounding check to a model's answers (eval --dump)")
    p.add_argument("dumps", nargs="+", help="JSONL files from `python -m assistant eval --dump` to fit on")
    p.add_argument("--check", nargs="*", default=[], help="dumps to check the fit on (not fitted on)")
    p.add_argument("--out", required=True, help="where to write the weights (for --grounding)")
    p.add_argument("--max-refused", type=float, default=0.05, help="answerable questions refused, at most")
    p.add_argument("--target", type=float, default=0.90, help="unanswerable questions flagged, wanted")
    p.set_defaults(func=cmd_fit)


def cmd_fit(args: argparse.Namespace) -> int:
    fit_on = Answers(read_dump(args.dumps))
    weights, rates = fit(fit_on, args.max_refused, args.target)
    table = {"shipped weights (fit data)": score_weights(fit_on, GroundingWeights()), "fitted (fit data)": rates}
    result = {"weights": asdict(weights), "fitted_on": args.dumps, "answers": len(fit_on), "rates": rates}
    if args.check:
        held = Answers(read_dump(args.check))
        result.update(checked_on=args.check, check_rates=score_weights(held, weights))
        table |= {"shipped weights (check data)": score_weights(held, GroundingWeights()),
                  "fitted (check data)": result["check_rates"]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(_table(table))
    print(f"\nweights: {json.dumps(asdict(weights))}\nwrote {out}: run the assistant with --grounding {out}")
    return 0
