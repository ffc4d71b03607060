"""Training options: the linear head, encoder fine-tuning and threshold calibration."""

from __future__ import annotations

from dataclasses import dataclass, fields

from index.errors import SettingError


@dataclass
class LinearConfig:
    """The frozen-embedding logistic-regression head."""

    c_grid: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0)  # inverse L2 strength, picked on held-out data
    c_holdout: float = 0.15  # share of the training data held out to pick C
    folds: int = 5  # cross-validation folds for the out-of-scope threshold
    max_iter: int = 1000

    def __post_init__(self) -> None:
        if not self.c_grid or min(self.c_grid) <= 0:
            raise SettingError("`c_grid` must list positive values of C")
        if not 0 < self.c_holdout < 0.5:
            raise SettingError(f"`c_holdout` must be in (0, 0.5), got {self.c_holdout}")
        if self.folds < 2:
            raise SettingError(f"`folds` must be at least 2, got {self.folds}")


@dataclass
class FinetuneConfig:
    """Fine-tuning the encoder with a cosine-softmax head (CPU, or CUDA when present)."""

    epochs: float = 5.0
    lr: float = 1e-4  # encoder learning rate (AdamW, linear warm-up then decay)
    head_lr: float = 3e-3
    batch_size: int = 32
    max_length: int = 64  # tokens; intents sit in the first sentence or two
    scale: float = 20.0  # cosine logits are multiplied by this before the softmax
    label_smoothing: float = 0.1
    warmup: float = 0.06  # share of the steps
    weight_decay: float = 0.01
    freeze_embeddings: bool = True  # the word-embedding matrix is half the model and gains little from tuning
    holdout: float = 0.1  # share kept out of fine-tuning to calibrate the threshold and ensemble weight
    ensemble: bool = True  # average with a frozen-embedding linear head when that helps on the held-out slice
    device: str | None = None  # default: cuda when present, else cpu
    bf16: bool | None = None  # bfloat16 autocast; default: where the hardware has it (~1.7x faster on such CPUs)

    def __post_init__(self) -> None:
        for name in ("epochs", "lr", "head_lr", "scale"):
            if getattr(self, name) <= 0:
                raise SettingError(f"`{name}` must be positive, got {getattr(self, name)}")
        if self.batch_size < 1 or self.max_length < 8:
            raise SettingError("`batch_size` must be >= 1 and `max_length` >= 8")
        if not 0 < self.holdout < 0.5:
            raise SettingError(f"`holdout` must be in (0, 0.5), got {self.holdout}")


@dataclass
class CalibrationConfig:
    """How the out-of-scope confidence threshold is chosen on held-out training data."""

    max_rejection: float = 0.05  # without out-of-scope rows: share of in-scope messages the threshold may reject
    min_oos: int = 3  # fewer held-out out-of-scope rows than this: treat the data as having none


def _split_options(options: dict, *configs: type) -> list:
    """Route keyword options to the dataclass that declares them; unknown names are an error."""
    known = {cls: {f.name for f in fields(cls)} for cls in configs}
    unknown = sorted(set(options) - set().union(*known.values()))
    if unknown:
        valid = ", ".join(sorted(set().union(*known.values())))
        raise SettingError(f"unknown training option(s) {', '.join(unknown)}: choose from {valid}")
    out = []
    for cls in configs:
        values = {k: v for k, v in options.items() if k in known[cls]}
        if "c_grid" in values:
            values["c_grid"] = tuple(values["c_grid"])
        out.append(cls(**values))
    return out
