"""Re-fitting the grounding check to a model's answers: the search's rule, the file, the CLI, the assistant."""

from __future__ import annotations

import json

import numpy as np
import pytest

from assistant.answering.grounding import GroundingWeights
from assistant.tools.grounding_fit import (
    Answers,
    FitError,
    fit,
    grounding_weights,
    load_weights,
    score_weights,
)
from tests.conftest import run_cli


def synthetic_dump(seed: int, n: int = 60) -> list[dict]:
    """Answers whose support separates answerable from unanswerable ones, with overlap, and whose
    retrieval strength does not (so a good fit leans on support); some routed elsewhere."""
    rng = np.random.default_rng(seed)
    rows = []
    for kind, support in (("answerable", 0.75), ("unanswerable", 0.35), ("removed", 0.45)):
        for i in range(n):
            checks = {"support": float(np.clip(rng.normal(support, 0.12), 0, 1)),
                      "retrieval": float(rng.uniform(0.3, 1.0)), "coverage": float(rng.uniform(0.5, 1.0)),
                      "figures": float(kind != "answerable" and i % 7 == 0), "empty": 0.0}
            rows.append({"kind": kind, "checks": checks, "intent_confidence": float(rng.uniform(0.6, 1.0)),
                         "refused": False, "caveat": False, "grounded": True, "action": "answer"})
        rows.append({"kind": kind, "checks": {}, "intent_confidence": 0.9, "refused": False, "caveat": False,
                     "grounded": False, "action": "answer"})  # no passages: declined whatever the weights
    return rows


def test_fit_keeps_refusals_of_answerable_questions_within_the_limit_and_beats_the_shipped_weights():
    answers = Answers(synthetic_dump(0))
    weights, rates = fit(answers)
    assert rates["answerable_refused"] <= 0.05
    shipped = score_weights(answers, GroundingWeights())
    assert rates["flagged"] >= shipped["flagged"] or rates["answerable_refused"] < shipped["answerable_refused"]
    assert weights.support > 0  # the only signal in this data
    assert 0 <= weights.refuse_below <= weights.caveat_below <= 1
    held = score_weights(Answers(synthetic_dump(1)), weights)  # another draw: the fit carries over
    assert held["answerable_refused"] <= 0.15 and held["unanswerable_flagged"] >= 0.8


def test_answers_the_check_did_not_run_on_keep_their_outcome():
    """Counted as `eval` counts them: an ungrounded unanswerable question was declined; an answerable one
    routed elsewhere (a flow, a handoff) was not refused."""
    answers = Answers(synthetic_dump(0))
    refused, _ = answers.outcomes(np.array([0.0, 0.0, 0.0, 1.0]), refuse_below=0.0, caveat_below=0.0)
    unchecked = ~answers.checked
    assert unchecked.sum() == 3
    assert refused[0][unchecked & (answers.kind != "answerable")].all()
    assert not refused[0][unchecked & (answers.kind == "answerable")].any()


def test_bad_dumps_and_weight_files_fail_clearly(tmp_path):
    with pytest.raises(FitError, match="no answers in the dump"):
        Answers([{"kind": "other"}])
    with pytest.raises(FitError, match="needs answerable and unanswerable"):
        Answers([r for r in synthetic_dump(0) if r["kind"] == "answerable"])
    bad = tmp_path / "bad.json"
    for content, message in (("{not json", "not JSON"), ('{"weights": {"bogus": 1}}', "no valid"),
                             ('{"weights": {"refuse_below": 0.9, "caveat_below": 0.5}}', "refuse_below <=")):
        bad.write_text(content)
        with pytest.raises(ValueError, match=message):
            load_weights(bad)
    with pytest.raises(ValueError, match="cannot read it"):
        load_weights(tmp_path / "missing.json")


def test_cli_fits_checks_and_the_assistant_answers_with_the_fitted_weights(tmp_path, data_dir, bank_bot):
    fit_file, check_file = tmp_path / "fit.jsonl", tmp_path / "check.jsonl"
    fit_file.write_text("".join(json.dumps(r) + "\n" for r in synthetic_dump(0)))
    check_file.write_text("".join(json.dumps(r) + "\n" for r in synthetic_dump(1)))
    out = tmp_path / "grounding.json"
    result = run_cli("assistant", "fit-grounding", str(fit_file), "--check", str(check_file), "--out", str(out))
    assert result.returncode == 0, result.stderr
    saved = json.loads(out.read_text())
    assert saved["rates"]["answerable_refused"] <= 0.05 and "check_rates" in saved
    assert "fitted (check data)" in result.stdout and f"--grounding {out}" in result.stdout
    assert load_weights(out) == GroundingWeights(**saved["weights"])

    # weights that refuse everything: the generative path withholds a real answer and offers a person
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"weights": {"refuse_below": 1.0, "caveat_below": 1.0}}))
    answer = run_cli("assistant", "ask", "What is the fee for an international wire transfer?", "--domain", "bank",
                     "--json", "--grounding", str(strict), "--answer-mode", "generative",
                     env={"RA_DATA_DIR": str(data_dir)})
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["refused"] is True
    missing = run_cli("assistant", "ask", "hi", "--grounding", str(tmp_path / "nope.json"),
                      env={"RA_DATA_DIR": str(data_dir)})
    assert missing.returncode == 2 and "--grounding" in missing.stderr and "Traceback" not in missing.stderr


def test_an_adapter_brings_its_own_weights_and_grounding_wins(tmp_path):
    from types import SimpleNamespace

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "grounding.json").write_text(json.dumps({"weights": {"support": 0.4, "caveat_below": 0.6}}))
    explicit = tmp_path / "explicit.json"
    explicit.write_text(json.dumps({"weights": {"support": 0.2}}))
    assert grounding_weights(SimpleNamespace(grounding=None, adapter=None)) is None  # the shipped ones
    assert grounding_weights(SimpleNamespace(grounding=None, adapter=str(adapter))).support == 0.4
    assert grounding_weights(SimpleNamespace(grounding=str(explicit), adapter=str(adapter))).support == 0.2
