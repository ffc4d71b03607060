"""Linear mode: the frozen sentence embedder and a logistic-regression head, C chosen on held-out data."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from assistant.understanding.intents.classifier import (
    Head,
    HeadEncoder,
    IntentClassifier,
    _saved_spec,
    calibrate_threshold,
)
from assistant.understanding.intents.data import stratified_split
from assistant.understanding.intents.options import CalibrationConfig, LinearConfig

if TYPE_CHECKING:
    from index.embed import Embedder


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
    from index.quiet import progress_bar

    str_labels = [labels[i] for i in y]
    keep, held = stratified_split(str_labels, config.c_holdout, seed)
    if len(config.c_grid) == 1 or len(held) == 0:
        return config.c_grid[0], {}
    scores = {}
    for c in progress_bar(config.c_grid, show=progress, desc="choosing C", unit="fit"):
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
    from index.quiet import progress_bar

    rng = np.random.default_rng(seed + 1)
    folds = np.zeros(len(y), dtype=int)
    for label in np.unique(y):  # stratified: every label spread over the folds
        idx = rng.permutation(np.flatnonzero(y == label))
        folds[idx] = (np.arange(len(idx)) + rng.integers(config.folds)) % config.folds
    probs = np.zeros((len(y), len(labels)))
    for k in progress_bar(range(config.folds), show=progress, desc="calibrating", unit="fold"):
        test = folds == k
        head = _lr_head(_fit_lr(x[~test], y[~test], c, config, seed), len(labels), encoder)
        probs[test] = head.probabilities(x[test])
    return probs


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
