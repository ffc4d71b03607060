"""Fine-tuning settings: one dataclass, loaded from YAML, every field overridable on the command line.

    python -m finetune --config finetune/configs/default.yaml --max-steps 30 --output-dir runs/x --device cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from index.errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used; the message names the field and what is allowed."""


@dataclass
class TrainConfig:
    # model
    model: str = "bundled"  # bundled, a hub id, a local directory or a .gguf file (as the assistant takes)
    device: str = "auto"  # auto (cuda when present), cuda, cpu
    load_in_4bit: bool | None = None  # QLoRA: NF4 + double quantisation, bf16 compute; default: on with CUDA
    bf16: bool | None = None  # bf16 weights/compute for the non-4-bit path; default: on with CUDA
    gradient_checkpointing: bool | None = None  # default: on with CUDA
    optimizer: str = "auto"  # auto (paged 8-bit AdamW with CUDA, else AdamW), adamw, paged_adamw_8bit
    parallel: str = "auto"  # several processes: ddp (a whole model each) or fsdp (base weights sharded);
    #                         auto = fsdp under `accelerate launch` with an FSDP config, else ddp
    # data
    train_files: list[str] = field(default_factory=lambda: ["finetune/data/bank_hospital_dialogues.jsonl"])
    eval_files: list[str] = field(default_factory=list)  # empty: hold out eval_fraction of the training data
    include_shared_medquad: bool = True  # also ../shared/data/medquad_sft (train + valid) when present
    eval_fraction: float = 0.05
    max_eval_examples: int = 200
    max_train_examples: int | None = None
    max_bad_fraction: float = 0.05  # more bad rows than this stops the run before training
    system_prompt: str | None = None  # added to examples without a system turn
    # LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    # optimisation
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"  # cosine, linear, constant
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 8
    gradient_accumulation: int = 1
    max_length: int = 512  # tokens per example (longer ones are cut, the answer kept where possible)
    packing: bool = False  # concatenate examples into max_length rows (no padding at all)
    group_by_length: bool = True  # without packing: batches of similar length (little padding)
    loss_chunk_tokens: int = 4096  # the LM head runs on this many supervised tokens at a time
    max_grad_norm: float = 1.0
    # evaluation, logging, saving
    eval_every: int = 0  # steps between evaluations during training (0: before and after only)
    log_every: int = 10
    save_every: int = 100  # steps between resumable checkpoints
    resume: bool = True  # continue from output_dir/checkpoint when one exists
    sample_prompts: list[str] = field(default_factory=lambda: [
        "What is the daily ATM withdrawal limit on a debit card?",
        "What are the visiting hours in the ICU?",
        "What are the symptoms of glaucoma?",
    ])
    sample_max_new_tokens: int = 64
    seed: int = 0
    output_dir: str = "runs/finetune"

    def __post_init__(self) -> None:
        if isinstance(self.train_files, str):
            self.train_files = [self.train_files]
        if isinstance(self.eval_files, str):
            self.eval_files = [self.eval_files] if self.eval_files else []
        checks = [
            (self.device in {"auto", "cuda", "cpu"} or self.device.startswith("cuda:"),
             f"device must be auto, cuda or cpu (got {self.device!r})"),
            (self.parallel in {"auto", "ddp", "fsdp"}, f"parallel must be auto, ddp or fsdp (got {self.parallel!r})"),
            (self.optimizer in {"auto", "adamw", "paged_adamw_8bit"},
             f"optimizer must be auto, adamw or paged_adamw_8bit (got {self.optimizer!r})"),
            (self.lr_scheduler in {"cosine", "linear", "constant"},
             f"lr_scheduler must be cosine, linear or constant (got {self.lr_scheduler!r})"),
            (self.lora_r >= 1 and self.lora_alpha > 0, "lora_r must be >= 1 and lora_alpha > 0"),
            (0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (self.epochs > 0, "epochs must be positive"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be at least 1"),
            (self.batch_size >= 1 and self.gradient_accumulation >= 1,
             "batch_size and gradient_accumulation must be at least 1"),
            (32 <= self.max_length <= 32768, "max_length must be between 32 and 32768"),
            (0 <= self.eval_fraction < 0.5, "eval_fraction must be in [0, 0.5)"),
            (0 <= self.max_bad_fraction <= 1, "max_bad_fraction must be in [0, 1]"),
            (self.loss_chunk_tokens >= 64, "loss_chunk_tokens must be at least 64"),
            (self.train_files, "train_files is empty: give at least one data file"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, raw, annotation):
    """A YAML or command-line value converted to the field's type, or a ConfigError naming the field."""
    hints = typing.get_type_hints(TrainConfig)
    kind = hints[name]
    args = typing.get_args(kind)
    optional = type(None) in args
    if raw is None or (isinstance(raw, str) and raw.lower() in {"none", "null"} and optional):
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty")
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        candidates = [a for a in args if a is not type(None)]
    else:
        candidates = [kind]
    errors = []
    for candidate in candidates:
        origin = typing.get_origin(candidate) or candidate
        try:
            if origin is bool:
                if isinstance(raw, bool):
                    return raw
                if str(raw).lower() in {"true", "1", "yes", "on"}:
                    return True
                if str(raw).lower() in {"false", "0", "no", "off"}:
                    return False
                raise ValueError("expected true or false")
            if origin is int:
                if isinstance(raw, bool):
                    raise ValueError("expected an integer")
                return int(raw)
            if origin is float:
                return float(raw)
            if origin is list:
                if isinstance(raw, list):
                    return [str(v) for v in raw]
                if isinstance(raw, str) and (str not in candidates or "," in raw):
                    return [v.strip() for v in raw.split(",") if v.strip()]
                raise ValueError("expected a list")
            if origin is str:
                if isinstance(raw, list | dict):
                    raise ValueError("expected a string")
                return str(raw)
        except (TypeError, ValueError) as exc:
            errors.append(str(exc))
    raise ConfigError(f"{name}: cannot use {raw!r} ({'; '.join(errors) or 'wrong type'})")


def load_config(path: str | Path | None = None, overrides: dict[str, object] | None = None) -> TrainConfig:
    """The YAML file's values (unknown keys are an error), then `overrides` on top."""
    values: dict[str, object] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file() and (CONFIG_DIR / path).is_file():
            path = CONFIG_DIR / path
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping of field: value")
        values.update(loaded)
    values.update(overrides or {})
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    return TrainConfig(**{k: _coerce(k, v, FIELDS[k].type) for k, v in values.items()})


def _field_help() -> dict[str, str]:
    """Each field's comment in TrainConfig's source: the help text of its command-line option."""
    help_text: dict[str, str] = {}
    last = None
    for line in inspect.getsource(TrainConfig).splitlines():
        match = re.match(r"\s{4}(\w+): [^=]+=.*?(?:#\s*(.*))?$", line)
        if match and match.group(1) in FIELDS:
            last = match.group(1)
            help_text[last] = match.group(2) or ""
        elif last and re.match(r"\s{4}#\s{2,}", line):  # a comment continued on the next line
            help_text[last] += " " + line.strip().lstrip("#").strip()
        elif not line.strip().startswith("#"):
            last = None
    return help_text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # a ConfigError (one line, exit 2 in the CLI) instead of argparse's exit
        message = message.replace("unrecognized arguments:", "unknown option")
        raise ConfigError(f"{message}; fields: {', '.join('--' + f.replace('_', '-') for f in FIELDS)}")


def argument_parser(prog: str = "python -m finetune", description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one option per TrainConfig field (`--max-steps 30`, `--packing`,
    `--no-packing`, lists comma-separated), each listed by `--help` with its default and its comment.
    Values stay strings: load_config converts them with the YAML values, so the CLI overrides the file."""
    p = _Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                add_help=False, allow_abbrev=False)
    p.add_argument("-h", "--help", action="help", help="show this message, every field with its default")
    p.add_argument("--config", default=None, help="a YAML file of field: value (default: default.yaml; "
                                                  "finetune/configs/ has more)")
    hints = typing.get_type_hints(TrainConfig)
    comments = _field_help()
    fields = p.add_argument_group("fields (override the config file's values)")
    for name, f in FIELDS.items():
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        flag = "--" + name.replace("_", "-")
        text = f"{comments.get(name, '')} (default: {default})".strip()
        if bool in (typing.get_args(hints[name]) or (hints[name],)):
            fields.add_argument(flag, dest=name, nargs="?", const="true", default=argparse.SUPPRESS,
                                metavar="true|false", help=text)
            fields.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_const", const="false",
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        else:
            fields.add_argument(flag, dest=name, default=argparse.SUPPRESS, metavar=name.upper(), help=text)
    return p


def parse_overrides(args: list[str]) -> dict[str, str]:
    """`--max-steps 30 --output-dir x --packing` -> {"max_steps": "30", "output_dir": "x", "packing": "true"}."""
    parsed = vars(argument_parser().parse_args(args))
    parsed.pop("config", None)
    return parsed
