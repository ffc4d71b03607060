"""The intent classifier on the real bundled embedder: training, out-of-scope, persistence, CLI, data errors."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from assistant.understanding.intents import (
    OUT_OF_SCOPE,
    ClassifierDirError,
    IntentClassifier,
    IntentDataError,
    calibrate_threshold,
    evaluate,
    load_utterances,
)
from assistant.understanding.intents_cli import add_intents_commands
from tests.conftest import SHARED_DATA

BANK = {
    "lost_card": [
        "I lost my debit card", "my card was stolen yesterday", "I can't find my credit card anywhere",
        "someone took my wallet with my card in it", "please block my lost card", "my card is missing",
        "I think I left my card at the restaurant and it's gone", "report a stolen card",
        "freeze my card, I lost it", "where do I report a lost card",
    ],
    "check_balance": [
        "what's my account balance", "how much money do I have in checking", "show me my balance",
        "balance on my savings account please", "how much is left in my account",
        "can you tell me my current balance", "what is the available balance", "check my balance",
        "how much money is in my savings", "I want to know my balance",
    ],
    "transfer_money": [
        "send 50 dollars to my sister", "transfer money to my savings account", "move funds between accounts",
        "how do I wire money to another bank", "I want to make a transfer", "pay my friend 20 dollars",
        "send money to John", "transfer 100 from checking to savings", "make a bank transfer abroad",
        "can I send money to another account",
    ],
    "branch_hours": [
        "when does the branch open", "what time do you close today", "are you open on saturday",
        "branch opening hours", "is the downtown branch open on sunday", "what are your hours",
        "until what time is the bank open", "opening times for the main street office",
        "are branches open on public holidays", "what time does the bank open tomorrow",
    ],
    "mortgage": [
        "what are your mortgage rates", "I want to apply for a home loan", "how much can I borrow for a house",
        "mortgage interest rate today", "can I refinance my mortgage", "help me get a mortgage",
        "fixed or variable rate home loan", "requirements for a mortgage application",
        "how long does mortgage approval take", "I'd like a loan to buy a flat",
    ],
    "human_agent": [
        "I want to talk to a person", "connect me to a human", "can I speak with an agent",
        "get me a real person please", "transfer me to customer service", "I need a human representative",
        "let me talk to someone", "operator please", "is there a human I can chat with",
        "speak to a real agent",
    ],
    OUT_OF_SCOPE: [
        "what's the weather like tomorrow", "who won the football game last night", "recommend a good movie",
        "how do I bake sourdough bread", "what's the best pizza topping", "play some music",
        "how tall is mount everest", "translate hello into french", "what is the meaning of life",
        "book me a flight to paris", "how do I fix my bike chain", "what's a good name for a dog",
    ],
}

HELD_OUT = [
    ("my card got stolen on the bus", "lost_card"),
    ("how much do I have in my account right now", "check_balance"),
    ("I'd like to send money to my brother", "transfer_money"),
    ("is the branch open this weekend", "branch_hours"),
    ("what's the rate on a 30 year mortgage", "mortgage"),
    ("please let me speak to a human being", "human_agent"),
    ("who painted the mona lisa", OUT_OF_SCOPE),
    ("what's a good recipe for lasagna", OUT_OF_SCOPE),
]


def write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def bank_rows() -> list[tuple[str, str]]:
    return [(text, label) for label, texts in BANK.items() for text in texts]


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("intents") / "bank.csv", bank_rows())


@pytest.fixture(scope="module")
def clf(train_csv, embedder) -> IntentClassifier:
    texts, labels = load_utterances(train_csv)
    return IntentClassifier.train(texts, labels, embedder=embedder, progress=False)


def cli(*argv: str) -> int:
    """Dispatch like the main CLI: `python -m assistant intents ...`."""
    parser = argparse.ArgumentParser(prog="assistant")
    add_intents_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


# ------------------------------------------------------------------------------- linear classifier


def test_linear_predicts_the_trained_intents(clf):
    assert clf.labels == sorted(BANK)
    assert 0 < clf.threshold < 1
    predictions = clf.predict([t for t, _ in HELD_OUT[:6]])
    assert [p.label for p in predictions] == [lab for _, lab in HELD_OUT[:6]]
    for p in predictions:
        assert 0 <= p.confidence <= 1 and len(p.top) == 3
        assert p.top[0][1] >= p.top[1][1] >= p.top[2][1]
        assert p.confidence == p.top[0][1]


@pytest.mark.parametrize("message", ["what's the capital of peru", "tell me a joke about cats"])
def test_unrelated_messages_are_out_of_scope(clf, message):
    assert clf.predict_one(message).label == OUT_OF_SCOPE


def test_the_threshold_decides_out_of_scope(clf):
    message = "how much money do I have"
    assert clf.predict_one(message).label == "check_balance"
    saved = clf.threshold
    try:
        clf.threshold = 1.01  # nothing is that confident
        assert clf.predict_one(message).label == OUT_OF_SCOPE
        assert clf.predict_one(message).top[0][0] == "check_balance"
        clf.threshold = 0.0
        assert clf.predict_one(message).label == "check_balance"
    finally:
        clf.threshold = saved
    calibration = clf.info["calibration"]
    assert calibration["out_of_scope_rows"] == len(BANK[OUT_OF_SCOPE])
    assert "out-of-scope recall" in calibration["rule"]


def test_calibration_without_out_of_scope_rows_rejects_few():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.3, size=400)
    labels = ["a", "b", "c", "d"]
    gold = [labels[i] for i in probs.argmax(1)]
    threshold, info = calibrate_threshold(probs, gold, labels)
    rejected = (probs.max(1) < threshold).mean()
    assert 0.02 <= rejected <= 0.05
    assert info["out_of_scope_recall"] is None


def test_save_load_round_trip(clf, tmp_path):
    clf.save(tmp_path / "model")
    loaded = IntentClassifier.load(tmp_path / "model")
    messages = [t for t, _ in HELD_OUT] + ["tell me a joke about cats"]
    assert loaded.labels == clf.labels and loaded.threshold == clf.threshold
    assert np.array_equal(loaded.probabilities(messages), clf.probabilities(messages))
    assert loaded.predict(messages) == clf.predict(messages)


def test_load_can_share_the_callers_embedder(clf, tmp_path, embedder):
    clf.save(tmp_path / "model")
    loaded = IntentClassifier.load(tmp_path / "model", embedder=embedder)
    assert loaded._encoder("bundled").embedder is embedder
    assert loaded.predict_one("I lost my card").label == "lost_card"


def test_load_refuses_a_directory_that_is_not_a_classifier(tmp_path):
    with pytest.raises(ClassifierDirError, match="not an intent classifier"):
        IntentClassifier.load(tmp_path)
    (tmp_path / "classifier.json").write_text('{"format": "something-else"}')
    with pytest.raises(ClassifierDirError, match="not an intent classifier file"):
        IntentClassifier.load(tmp_path)


def test_evaluate_reports_in_scope_accuracy_and_recall(clf, tmp_path):
    report = evaluate(clf, [t for t, _ in HELD_OUT], [lab for _, lab in HELD_OUT], out_dir=tmp_path)
    assert report["accuracy"] == 1.0 and report["macro_f1"] == 1.0
    assert report["in_scope_accuracy"] == 1.0 and report["out_of_scope_recall"] == 1.0
    assert set(report["per_intent"]) == set(BANK)
    assert report["per_intent"]["mortgage"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
    assert json.loads((tmp_path / "report.json").read_text())["accuracy"] == 1.0


# ---------------------------------------------------------------------------------------- data


def test_loads_csv_jsonl_and_clinc_json(tmp_path):
    texts, labels = load_utterances(write_csv(tmp_path / "a.csv", [("hi there", "greet"), ("hello", "greet"),
                                                                   ("bye", "leave"), ("see you", "leave")],
                                              header=("text", "category")))
    assert texts == ["hi there", "hello", "bye", "see you"] and labels == ["greet", "greet", "leave", "leave"]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "label": lab}) for t, lab in
                               [("a", "x"), ("b", "x"), ("c", "y"), ("d", "y")]) + "\n")
    assert load_utterances(jsonl) == (["a", "b", "c", "d"], ["x", "x", "y", "y"])
    clinc = tmp_path / "clinc.json"
    clinc.write_text(json.dumps({"train": [["t1", "balance"], ["t2", "balance"]],
                                 "oos_train": [["o1", "oos"], ["o2", "oos"]],
                                 "val": [["v1", "balance"], ["v2", "balance"]], "oos_val": [["o3", "oos"], ["o4", "oos"]]}))
    assert load_utterances(clinc) == (["t1", "t2", "o1", "o2"], ["balance", "balance", OUT_OF_SCOPE, OUT_OF_SCOPE])
    assert load_utterances(clinc, split="val")[0] == ["v1", "v2", "o3", "o4"]


@pytest.mark.parametrize("name, content, match", [
    ("no_label.csv", "text,notes\nhello,x\nhi,y\n", r"no_label\.csv line 1: .*lacks a `label`"),
    ("empty.csv", "", r"empty\.csv: the file is empty"),
    ("bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": \n', r"bad\.jsonl line 2: not valid JSON"),
    ("single.csv", "text,label\na,x\nb,x\nc,y\n", r"single\.csv line 4: intent 'y' has only 1 example\(s\)"),
    ("blank.csv", "text,label\na,x\n,x\n", r"blank\.csv line 3: the text is empty"),
])
def test_bad_data_is_a_clear_error(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(IntentDataError, match=match) as error:
        load_utterances(path)
    assert isinstance(error.value, ValueError) and "\n" not in str(error.value)


def test_unknown_training_option_is_named(embedder):
    with pytest.raises(ValueError, match="unknown training option.*epoks"):
        IntentClassifier.train(["a", "b", "c", "d"], ["x", "x", "y", "y"], embedder=embedder, epoks=3)


# ----------------------------------------------------------------------------------------- CLI


def test_cli_train_predict_eval(train_csv, tmp_path, capsys):
    model = tmp_path / "model"
    assert cli("intents", "train", "--data", str(train_csv), "--out", str(model), "--mode", "linear") == 0
    assert "trained linear classifier" in capsys.readouterr().out

    messages = ["tell me a joke about cats", "I lost my card", "what time does the branch close",
                "send 20 dollars to my mom", "what's the capital of peru"]
    inputs = tmp_path / "messages.txt"
    inputs.write_text("\n".join(messages) + "\n")
    assert cli("intents", "predict", str(model), "--input", str(inputs), "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == messages  # input order
    assert [r["label"] for r in rows] == [OUT_OF_SCOPE, "lost_card", "branch_hours", "transfer_money",
                                          OUT_OF_SCOPE]
    assert all(set(r) == {"text", "label", "confidence"} for r in rows)
    assert cli("intents", "predict", str(model), "--input", str(inputs)) == 0
    assert "lost_card" in capsys.readouterr().out

    data = write_csv(tmp_path / "held_out.csv", HELD_OUT)
    assert cli("intents", "eval", str(model), "--data", str(data), "--json", "--out", str(tmp_path / "rep")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accuracy"] == 1.0 and report["out_of_scope_recall"] == 1.0
    assert (tmp_path / "rep" / "confusion_matrix.png").exists()
    assert cli("intents", "eval", str(model), "--data", str(data)) == 0
    assert "in-scope accuracy" in capsys.readouterr().out


def test_cli_user_errors_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="not an intent classifier"):
        cli("intents", "predict", str(tmp_path), "--input", str(tmp_path / "x.txt"))
    with pytest.raises(ValueError, match="no such file"):
        cli("intents", "train", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "m"))
    data = write_csv(tmp_path / "tiny.csv", [("a", "x"), ("b", "x"), ("c", "y"), ("d", "y")])
    with pytest.raises(ValueError, match="--epochs only apply to --mode finetune"):
        cli("intents", "train", "--data", str(data), "--out", str(tmp_path / "m"), "--mode", "linear", "--epochs", "2")


# ------------------------------------------------------------------------------------ finetune


def test_finetune_tiny_run_saves_and_predicts_through_onnx(train_csv, tmp_path, embedder):
    from index.onnx_embed import quantized_model

    texts, labels = load_utterances(train_csv)
    tuned = IntentClassifier.train(texts, labels, mode="finetune", embedder=embedder, epochs=1, batch_size=16,
                                   progress=False)
    tuned.save(tmp_path / "tuned")
    onnx_dir = quantized_model(tmp_path / "tuned" / "encoder").parent
    try:
        loaded = IntentClassifier.load(tmp_path / "tuned")
        assert loaded.mode == "finetune" and loaded.labels == sorted(BANK)
        assert (tmp_path / "tuned" / "encoder" / "modules.json").exists()
        predictions = loaded.predict([t for t, _ in HELD_OUT])
        assert sum(p.label == lab for p, (_, lab) in zip(predictions, HELD_OUT, strict=True)) >= 6
        assert loaded._encoder("encoder").embedder.resolved_backend == "onnx-int8"
    finally:
        shutil.rmtree(onnx_dir, ignore_errors=True)  # the export is cached by path: do not leave it behind


# --------------------------------------------------------------------------------- public data


@pytest.mark.slow
def test_banking77_subset_linear(embedder):
    path = SHARED_DATA / "banking77" / "train.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    texts, labels = load_utterances(path)
    keep = sorted(set(labels))[:10]
    rows = [(t, lab) for t, lab in zip(texts, labels, strict=True) if lab in keep]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(rows))
    train = [rows[i] for i in order[: int(0.8 * len(rows))]]
    test = [rows[i] for i in order[int(0.8 * len(rows)):]]
    clf = IntentClassifier.train([t for t, _ in train], [lab for _, lab in train], embedder=embedder,
                                 progress=False)
    report = evaluate(clf, [t for t, _ in test], [lab for _, lab in test])
    assert report["top1_accuracy"] > 0.9
