"""Measure PII redaction: recall and false positives on a labelled set, on generated cases, and speed.

    python -m assistant.tools.redact_eval                         # all three parts, a table each
    python -m assistant.tools.redact_eval --json runs/redact.json # the same, also written as JSON
    python -m assistant.tools.redact_eval --part labelled --misses

- labelled: `tests/data/pii/messages.jsonl`, bank and hospital customer messages written from the
  issue's list of personal-data kinds (not from the rules), PII values marked, plus clean messages
  full of look-alikes, and `heldout.jsonl`, written the same way after the rules existed and not
  tuned on (see their README). A value counts as caught when every non-space character of it is
  masked; recall is reported per kind; the false-positive rate is the share of clean messages with
  anything masked. Each message is redacted as the pipeline does it, with its pack's published
  contacts allowed.
- generated: 800 seeded cases (cards, IBANs, SSNs, accounts, phones, e-mails, dates of birth, MRNs in
  several formats inside customer sentences), written against the first rules, and false positives
  on the packs' own evaluation questions: the numbers kept from before.
- timing: milliseconds to redact 100,000-character adversarial inputs (`a` * 100k, `1` * 100k,
  `a@` * 50k, ...), the whole redactor and its slowest detector on each; the target is 100 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import time
from dataclasses import dataclass, field
from pathlib import Path

from assistant.compliance.redact import DETECTORS, Doc, Redactor, luhn_ok, public_numbers

PII_DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "pii"
LABELLED_SET = PII_DATA / "messages.jsonl"
HELD_OUT_SET = PII_DATA / "heldout.jsonl"
TARGET_MS = 100.0

TEMPLATES = [
    "Hi, my {label} is {value}, can you help?",
    "{value} is my {label}.",
    "please check {label} {value} for me",
    "I need help. {label}: {value}. Thanks",
    "Can you update my records? {label} {value}",
    "my {label} - {value} - was wrong on the letter",
    "{label}\n{value}",
    "The {label} on file should be {value} not the old one",
]

LABELS = {
    "card": ["card number", "credit card", "debit card", "card"],
    "iban": ["IBAN", "iban", "bank account (IBAN)"],
    "ssn": ["SSN", "social security number", "ssn"],
    "account": ["account number", "acct #", "account no.", "account"],
    "phone": ["phone", "phone number", "cell", "number to call back"],
    "email": ["email", "e-mail address", "email address"],
    "dob": ["date of birth", "DOB", "birthday", "birth date"],
    "mrn": ["MRN", "medical record number", "patient ID"],
}


def _card(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("37", 15), ("6011", 16), ("4", 13)])
    while True:
        body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix)))
        if luhn_ok(body):
            break
    style = rng.choice(["plain", "space", "dash"])
    if style == "plain" or length not in (15, 16):
        return body
    sep = " " if style == "space" else "-"
    groups = [body[:4], body[4:10], body[10:]] if length == 15 else [body[i:i + 4] for i in range(0, 16, 4)]
    return sep.join(groups)


def _iban(rng: random.Random) -> str:
    country, length = rng.choice([("DE", 22), ("GB", 22), ("FR", 27), ("NL", 18), ("ES", 24), ("IE", 22)])
    if country in ("GB", "NL", "IE"):
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + "".join(
            rng.choice(string.digits) for _ in range(length - 8))
    else:
        bban = "".join(rng.choice(string.digits) for _ in range(length - 4))
    moved = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
    iban = f"{country}{check:02d}{bban}"
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.5 else iban


def _ssn(rng: random.Random) -> str:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    a, g, s = f"{area:03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"
    return rng.choice([f"{a}-{g}-{s}", f"{a} {g} {s}", f"{a}{g}{s}"])


def _account(rng: random.Random) -> str:
    digits = "".join(rng.choice(string.digits) for _ in range(rng.randint(8, 14)))
    return rng.choice([digits, f"{digits[:4]}-{digits[4:]}", f"{digits[:4]} {digits[4:]}"])


def _phone(rng: random.Random) -> str:
    a, b, c = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice([f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}", f"+1 {a} {b} {c:04d}",
                       f"1-{a}-{b}-{c:04d}", f"+44 20 {rng.randint(7000, 8999)} {c:04d}",
                       f"07{rng.randint(100, 999)} {rng.randint(100000, 999999)}", f"{a}{b}{c:04d}"])


def _email(rng: random.Random) -> str:
    user = rng.choice(["john.smith", "m.garcia", "lee_w", "anna+bank", "k.o'neil", "jdoe1987", "priya.n"])
    host = rng.choice(["example.com", "mail.example.org", "hospital-mail.net", "uni.ac.uk", "gmail.com"])
    return f"{user}@{host}"


_MONTH_NAMES = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
                "October", "November", "December"]


def _dob(rng: random.Random) -> str:
    y, m, d = rng.randint(1930, 2012), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice([f"{m:02d}/{d:02d}/{y}", f"{d}.{m}.{y}", f"{y}-{m:02d}-{d:02d}", f"{_MONTH_NAMES[m - 1]} {d}, {y}",
                       f"{d} {_MONTH_NAMES[m - 1]} {y}", f"{_MONTH_NAMES[m - 1][:3]} {d} {y}", f"{m}/{d}/{y}"])


def _mrn(rng: random.Random) -> str:
    digits = "".join(rng.choice(string.digits) for _ in range(rng.randint(6, 9)))
    return rng.choice([digits, f"MR-{digits}", f"SB{digits}"])


GENERATORS = {"card": _card, "iban": _iban, "ssn": _ssn, "account": _account, "phone": _phone,
              "email": _email, "dob": _dob, "mrn": _mrn}

BENIGN = [
    "The outgoing international wire fee is $45.00 and the cut-off is 4:00 p.m.",
    "Can I book an appointment for next Tuesday at 10:30?",
    "My statement shows a charge of 129.99 from the 3rd.",
    "Visiting hours are 8:00 a.m. to 8:00 p.m. in ward 4B.",
    "Is the overdraft limit 500 or 1,000 dollars?",
    "I paid 2 invoices of $1,250 each last month.",
    "What does APR 19.99% mean for my balance of 3400?",
    "Room 312 is on the 3rd floor, building C.",
    "The parking garage costs $2 per hour, max $12 a day.",
    "Do you open at 9 on Saturday the 14th?",
    "My daughter is 7 years old and needs a flu shot.",
    "I was charged twice, 45.00 and 45.00.",
]


def _covered(redactor: Redactor, text: str) -> set[int]:
    covered: set[int] = set()
    for f in redactor.find(text):
        covered.update(range(f.start, f.end))
    return covered


def _caught(text: str, start: int, end: int, covered: set[int]) -> bool:
    return all(i in covered for i in range(start, end) if not text[i].isspace())


# --- the labelled set -----------------------------------------------------------------------------

@dataclass
class LabelledReport:
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [caught, values]
    clean: int = 0
    clean_flagged: int = 0
    pii_messages: int = 0
    stray_masks: int = 0  # masks on PII messages that touch no marked value
    misses: list[str] = field(default_factory=list)
    false_positives: list[str] = field(default_factory=list)

    @property
    def values(self) -> int:
        return sum(n for _, n in self.by_kind.values())

    @property
    def caught(self) -> int:
        return sum(c for c, _ in self.by_kind.values())

    @property
    def false_positive_rate(self) -> float:
        return self.clean_flagged / self.clean if self.clean else 0.0

    def to_dict(self) -> dict:
        return {"values": self.values, "caught": self.caught, "recall": round(self.caught / self.values, 4),
                "by_kind": {k: {"caught": c, "values": n, "recall": round(c / n, 4)}
                            for k, (c, n) in sorted(self.by_kind.items())},
                "clean_messages": self.clean, "clean_flagged": self.clean_flagged,
                "false_positive_rate": round(self.false_positive_rate, 4),
                "pii_messages": self.pii_messages, "stray_masks_on_pii_messages": self.stray_masks,
                "misses": self.misses, "false_positives": self.false_positives}


def pack_redactors() -> dict[str, Redactor]:
    """A redactor per pack, built as the pipeline builds it (the pack's own contacts are public)."""
    from assistant.packs import available_packs, load_pack

    redactors = {}
    for name in available_packs():
        pack = load_pack(name)
        redactors[name] = Redactor(allow=public_numbers([*pack.contacts.values(), *pack.replies.values()]))
    return redactors


def load_labelled(path: Path = LABELLED_SET) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        cursor: dict[str, int] = {}
        for item in row["pii"]:
            start = row["text"].find(item["value"], cursor.get(item["value"], 0))
            if start < 0:
                raise ValueError(f"{path}: {row['id']}: {item['value']!r} is not in its text")
            item["start"], item["end"] = start, start + len(item["value"])
            cursor[item["value"]] = item["end"]
    return rows


def evaluate_labelled(path: Path = LABELLED_SET) -> LabelledReport:
    redactors = pack_redactors()
    report = LabelledReport()
    for row in load_labelled(path):
        redactor, text = redactors[row["pack"]], row["text"]
        found = redactor.find(text)
        covered = {i for f in found for i in range(f.start, f.end)}
        if not row["pii"]:
            report.clean += 1
            if found:
                report.clean_flagged += 1
                report.false_positives.append(f"{row['id']}: {text!r} -> {redactor.redact(text)!r}")
            continue
        report.pii_messages += 1
        for item in row["pii"]:
            counts = report.by_kind.setdefault(item["kind"], [0, 0])
            counts[1] += 1
            if _caught(text, item["start"], item["end"], covered):
                counts[0] += 1
            else:
                report.misses.append(f"{item['kind']}: {item['value']!r} in {text!r} -> {redactor.redact(text)!r}")
        marked = [(i["start"], i["end"]) for i in row["pii"]]
        for f in found:
            if not any(f.start < e and s < f.end for s, e in marked):
                report.stray_masks += 1
                report.false_positives.append(f"{row['id']} (stray {f.tag}): {f.text!r} in {text!r}")
    return report


# --- generated cases (the first rules' own test) --------------------------------------------------

@dataclass
class RedactionReport:
    cases: int
    caught: int
    by_type: dict[str, tuple[int, int]]
    benign: int
    benign_flagged: int
    misses: list[str]

    @property
    def recall(self) -> float:
        return self.caught / self.cases

    def to_dict(self) -> dict:
        return {"cases": self.cases, "recall": round(self.recall, 4),
                "by_type": {k: {"caught": c, "cases": n} for k, (c, n) in self.by_type.items()},
                "benign_messages": self.benign, "benign_flagged": self.benign_flagged,
                "false_positive_rate": round(self.benign_flagged / self.benign, 4) if self.benign else None,
                "misses": self.misses[:20]}


def synthetic_cases(n: int = 800, seed: int = 7) -> list[tuple[str, str, str]]:
    """(kind, text, value) triples; the value occurs in the text exactly once."""
    rng = random.Random(seed)
    kinds = list(GENERATORS)
    cases = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        value = GENERATORS[kind](rng)
        text = rng.choice(TEMPLATES).format(label=rng.choice(LABELS[kind]), value=value)
        cases.append((kind, text, value))
    return cases


def benign_messages() -> list[str]:
    from assistant.packs import available_packs, load_pack

    texts = list(BENIGN)
    for name in available_packs():
        pack = load_pack(name)
        for file in ("questions.jsonl", "unanswerable.jsonl"):
            path = pack.root / "eval" / file
            if path.exists():
                texts += [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]
    return texts


def evaluate(n: int = 800, seed: int = 7) -> RedactionReport:
    redactor = Redactor()
    by_type: dict[str, list[int]] = {k: [0, 0] for k in GENERATORS}
    caught, misses = 0, []
    cases = synthetic_cases(n, seed)
    for kind, text, value in cases:
        start = text.index(value)
        ok = _caught(text, start, start + len(value), _covered(redactor, text))
        by_type[kind][1] += 1
        if ok:
            caught += 1
            by_type[kind][0] += 1
        else:
            misses.append(f"{kind}: {text!r} -> {redactor.redact(text)!r}")
    benign = benign_messages()
    flagged = sum(1 for t in benign if redactor.find(t))
    return RedactionReport(len(cases), caught, {k: tuple(v) for k, v in by_type.items()}, len(benign), flagged, misses)


# --- speed on adversarial input -------------------------------------------------------------------

def adversarial_inputs(length: int = 100_000, seed: int = 3) -> dict[str, str]:
    """Inputs that make backtracking patterns quadratic or worse, each `length` characters."""
    rng = random.Random(seed)
    message = ("Hi, I'm Sarah Connolly, card 4111 1111 1111 1111 exp 09/27 cvv 382, DOB 03/14/1985, "
               "call 617-555-0199 or sarah.c@example.com, I live at 12 Baker Street, London NW1 6XE. ")

    def fill(unit: str) -> str:
        return (unit * (length // len(unit) + 1))[:length]

    return {
        "a": fill("a"), "1": fill("1"), "a@": fill("a@"), "1 ": fill("1 "), "1-": fill("1-"),
        "a.": fill("a."), "1.": fill("1."), "A ": fill("A "), "12 ": fill("12 "), "a@a.": fill("a@a."),
        "mixed": "".join(rng.choice("aA1 -./@:+(),'\n") for _ in range(length)),
        "digits and separators": "".join(rng.choice("0123456789 -./") for _ in range(length)),
        "PII message": fill(message),
    }


def best_ms(fn, text: str, repeats: int = 3, clock=time.perf_counter) -> float:
    """The fastest of `repeats` runs of fn(text), in milliseconds of `clock`."""
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        fn(text)
        best = min(best, clock() - start)
    return best * 1000


def timing(length: int = 100_000, repeats: int = 3) -> dict:
    """CPU and wall milliseconds of the whole redactor on each adversarial input, and its slowest
    detector. CPU time is the measure: on a shared machine wall time also counts other processes."""
    redactor = Redactor()
    rows = {}
    for name, text in adversarial_inputs(length).items():
        cpu = best_ms(redactor.find, text, repeats, time.process_time)
        wall = best_ms(redactor.find, text, repeats)
        detectors = {d: best_ms(lambda t, f=f: list(f(Doc.of(t), redactor)), text, repeats, time.process_time)
                     for d, f in DETECTORS}
        slowest = max(detectors, key=detectors.get)
        rows[name] = {"cpu_ms": round(cpu, 1), "wall_ms": round(wall, 1),
                      "slowest_detector": slowest, "slowest_detector_cpu_ms": round(detectors[slowest], 1)}
    worst = max(row["cpu_ms"] for row in rows.values())
    return {"length": length, "target_ms": TARGET_MS, "worst_cpu_ms": worst, "within_target": worst <= TARGET_MS,
            "inputs": rows}


# --- the command ------------------------------------------------------------------------------------

def _print_labelled(path: Path, report: LabelledReport, misses: bool) -> None:
    print(f"{path.relative_to(PII_DATA.parents[2])}: recall {report.caught}/{report.values} = "
          f"{report.caught / report.values:.1%}")
    print(f"  {'kind':<9} {'caught':>7} {'recall':>7}")
    for kind, (c, n) in sorted(report.by_kind.items()):
        print(f"  {kind:<9} {f'{c}/{n}':>7} {c / n:>7.0%}")
    print(f"  false positives: {report.clean_flagged} of {report.clean} clean messages "
          f"({report.false_positive_rate:.1%}); {report.stray_masks} stray masks on {report.pii_messages} "
          "PII messages")
    if misses:
        for line in report.misses + report.false_positives:
            print("   ", line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m assistant.tools.redact_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["all", "labelled", "generated", "timing"], default="all")
    p.add_argument("--n", type=int, default=800, help="generated cases")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated cases")
    p.add_argument("--length", type=int, default=100_000, help="characters of each adversarial input")
    p.add_argument("--misses", action="store_true", help="list every miss and false positive")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    args = p.parse_args(argv)
    results: dict = {}
    if args.part in ("all", "labelled"):
        for key, path in (("labelled", LABELLED_SET), ("held_out", HELD_OUT_SET)):
            report = evaluate_labelled(path)
            results[key] = report.to_dict()
            _print_labelled(path, report, args.misses)
    if args.part in ("all", "generated"):
        generated = evaluate(args.n, args.seed)
        results["generated"] = generated.to_dict()
        print(f"generated cases: recall {generated.recall:.2%} ({generated.caught}/{generated.cases}); false "
              f"positives: {generated.benign_flagged} of {generated.benign} pack questions and PII-free sentences")
        for kind, (c, n) in generated.by_type.items():
            print(f"  {kind:<9} {c}/{n}")
        for miss in generated.misses[:20]:
            print("    missed", miss)
    if args.part in ("all", "timing"):
        speed = timing(args.length)
        results["timing"] = speed
        print(f"speed: ms to redact {args.length:,}-character inputs (best of 3; target {TARGET_MS:.0f} ms CPU)")
        print(f"  {'input':<24} {'CPU ms':>7} {'wall ms':>8}  slowest detector (CPU ms)")
        for name, row in speed["inputs"].items():
            print(f"  {name!r:<24} {row['cpu_ms']:>7.1f} {row['wall_ms']:>8.1f}  {row['slowest_detector']:<16} "
                  f"{row['slowest_detector_cpu_ms']:>6.1f}")
        print(f"  worst: {speed['worst_cpu_ms']:.1f} ms CPU "
              f"({'within' if speed['within_target'] else 'OVER'} the {TARGET_MS:.0f} ms target)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
