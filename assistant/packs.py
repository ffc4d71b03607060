"""Domain packs: an institution's documents, intents, system prompt and scripted replies, as files.

See `assistant/packs/FORMAT.md` for the layout.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from index.errors import UserError

PACKS_DIR = Path(__file__).parent / "packs"
ACTIONS = {"answer", "flow", "handoff", "emergency", "smalltalk", "out_of_scope"}
REQUIRED_REPLIES = ("no_answer", "out_of_scope", "handoff")


class PackError(UserError, ValueError):
    """A domain pack that is missing or malformed; the message names the file and the fix."""


@dataclass
class IntentSpec:
    label: str
    action: str
    reply: str | None = None
    description: str = ""


@dataclass
class DomainPack:
    name: str
    root: Path
    institution: str
    assistant_name: str
    contacts: dict[str, str]
    intents: dict[str, IntentSpec]
    replies: dict[str, str]  # reply name -> template text
    system_prompt_template: str
    examples: list[str] = field(default_factory=list)
    # answerable model name -> its thresholds set on this pack's own questions (`calibration` in pack.yaml)
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def docs_dir(self) -> Path:
        return self.root / "docs"

    @property
    def intents_file(self) -> Path:
        return self.root / "intents.csv"

    @property
    def system_prompt(self) -> str:
        return self.render_text(self.system_prompt_template)

    def docs_fingerprint(self) -> str:
        """Changes whenever a document is added, removed or edited."""
        return folder_fingerprint(self.docs_dir)

    def render_text(self, template: str, **slots: str) -> str:
        values = {"institution": self.institution, "assistant_name": self.assistant_name,
                  **{k: str(v) for k, v in self.contacts.items()}, **slots}
        return string.Formatter().vformat(template, (), _Fallback(values)).strip()

    def reply(self, name: str, **slots: str) -> str:
        """A scripted reply with placeholders filled; unknown slots get a readable fallback."""
        if name not in self.replies:
            raise PackError(f"pack '{self.name}' has no reply '{name}' (add replies/{name}.md)")
        return self.render_text(self.replies[name], **slots)


def folder_fingerprint(folder: Path) -> str:
    """SHA-256 over every file's relative path and bytes: changes when a file is added, removed or edited."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class _Fallback(dict):
    """Placeholder values with fallbacks, so a reply never shows a raw `{slot}`."""

    FALLBACKS = {"card_last4": "your card", "date": "at a time that suits you", "ticket": "(pending)"}

    def __missing__(self, key: str) -> str:
        return self.FALLBACKS.get(key, key.replace("_", " "))


def available_packs() -> list[str]:
    return sorted(p.name for p in PACKS_DIR.iterdir() if (p / "pack.yaml").is_file())


def load_pack(name_or_path: str) -> DomainPack:
    """Load a built-in pack by name (`bank`, `hospital`) or any pack directory."""
    root = Path(name_or_path).expanduser()
    if not (root / "pack.yaml").is_file():
        root = PACKS_DIR / name_or_path
    if not (root / "pack.yaml").is_file():
        raise PackError(
            f"unknown domain '{name_or_path}': choose one of {', '.join(available_packs())} "
            "or pass a pack directory containing pack.yaml"
        )
    try:
        meta = yaml.safe_load((root / "pack.yaml").read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise PackError(f"{root / 'pack.yaml'} is not valid YAML: {exc}") from exc
    for key in ("name", "institution", "intents"):
        if key not in meta:
            raise PackError(f"{root / 'pack.yaml'} lacks the key '{key}'")
    intents = {}
    for label, spec in (meta.get("intents") or {}).items():
        spec = spec or {}
        action = spec.get("action", "answer")
        if action not in ACTIONS:
            raise PackError(f"{root / 'pack.yaml'}: intent '{label}' has unknown action '{action}' "
                            f"(use one of {', '.join(sorted(ACTIONS))})")
        intents[label] = IntentSpec(label=label, action=action, reply=spec.get("reply"),
                                    description=spec.get("description", ""))
    reply_files = {**{i.label: i.reply for i in intents.values() if i.reply}, **(meta.get("replies") or {})}
    replies = {}
    for name, filename in reply_files.items():
        path = root / "replies" / filename
        if not path.is_file():
            raise PackError(f"pack '{meta['name']}': reply file {path} is missing")
        replies[name] = path.read_text(encoding="utf-8")
    for required in REQUIRED_REPLIES:
        if required not in replies:
            raise PackError(f"pack '{meta['name']}' needs a '{required}' reply (replies: {required}: FILE in pack.yaml)")
    prompt_file = root / "system_prompt.md"
    if not prompt_file.is_file():
        raise PackError(f"pack '{meta['name']}' has no system_prompt.md")
    return DomainPack(
        name=meta["name"], root=root, institution=meta["institution"],
        assistant_name=meta.get("assistant_name", f"{meta['institution']} assistant"),
        contacts={k: str(v) for k, v in (meta.get("contacts") or {}).items()},
        intents=intents, replies=replies,
        system_prompt_template=prompt_file.read_text(encoding="utf-8"),
        examples=list(meta.get("examples") or []),
        calibration=_calibration(meta.get("calibration"), root / "pack.yaml"),
    )


CALIBRATED = ("flag_prob",)  # the thresholds a pack may set for itself


def _calibration(raw, path: Path) -> dict[str, dict[str, float]]:
    """`calibration: {MODEL: {flag_prob: 0.6}}`: thresholds of the named answerable model, set on the pack's own
    customer-phrased questions."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PackError(f"{path}: 'calibration' must map an answerable model's name to its thresholds "
                        "(calibration: {judged-2026-12-03: {flag_prob: 0.6}})")
    out: dict[str, dict[str, float]] = {}
    for model, values in raw.items():
        if not isinstance(values, dict) or not values:
            raise PackError(f"{path}: calibration '{model}' must map {', '.join(CALIBRATED)} to a number")
        for key, value in values.items():
            if key not in CALIBRATED:
                raise PackError(f"{path}: calibration '{model}' has unknown key '{key}' (use {', '.join(CALIBRATED)})")
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
                raise PackError(f"{path}: calibration '{model}' {key} must be a probability between 0 and 1 "
                                f"(got {value!r})")
        out[str(model)] = {k: float(v) for k, v in values.items()}
    return out

