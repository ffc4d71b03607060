"""Intent classification (one module per concern: data, options, classifier, linear,
encoder_tuning, evaluation): train on labelled utterances, detect out-of-scope messages, predict, evaluate.

    python -m assistant intents train --data assistant/packs/bank/intents.csv --out runs/bank-intents
    python -m assistant intents train --data ../shared/data/banking77/train.csv --out runs/b77 --mode finetune
    python -m assistant intents predict runs/bank-intents --input messages.txt --json
    python -m assistant intents eval runs/bank-intents --data held_out.csv --out runs/bank-report

Two modes:
- `linear` (default, seconds): the frozen sentence embedder + a logistic-regression head, its C
  chosen on a held-out slice of the training data.
- `finetune` (minutes on a CPU): the encoder itself is fine-tuned with a cosine-softmax head,
  label-smoothed cross-entropy and bfloat16 autocast where the hardware has it; it is saved inside
  the classifier directory and runs through the int8 ONNX path at prediction time. A frozen-embedding
  linear head joins it (averaged probabilities) only when that helps on held-out training data.

Out-of-scope: `out_of_scope` rows in the training data are a class of their own. On top of that a
confidence threshold is calibrated on training data the head did not see (cross-validation in
linear mode, a held-out slice in finetune mode): with out-of-scope rows it maximises in-scope
accuracy + out-of-scope recall; without them it rejects at most 5% of the held-out in-scope messages.
"""

from assistant.understanding.intents.classifier import (
    ENCODER_DIR,
    MODES,
    IntentClassifier,
    Prediction,
    calibrate_threshold,
)
from assistant.understanding.intents.data import (
    OUT_OF_SCOPE,
    ClassifierDirError,
    IntentDataError,
    load_utterances,
)
from assistant.understanding.intents.encoder_tuning import limit_threads
from assistant.understanding.intents.evaluation import evaluate

__all__ = ["ClassifierDirError", "ENCODER_DIR", "IntentClassifier", "IntentDataError", "MODES", "OUT_OF_SCOPE", "Prediction", "calibrate_threshold", "evaluate", "limit_threads", "load_utterances"]
