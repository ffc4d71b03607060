"""Measure PII redaction: recall on generated cases, false positives on PII-free customer messages.

    python -m assistant.redact_eval [--n 800] [--seed 7] [--json]

Cases are generated: valid card numbers (Luhn), valid IBANs (mod 97), SSNs, account numbers,
US/UK phone numbers, e-mail addresses, dates of birth and medical-record numbers, in several
written formats, inside customer-style sentences. A case counts as caught when every character of
the PII value is masked. False positives are counted on the domain packs' own evaluation
questions (real customer phrasing, no PII) and on PII-free sentences with amounts, times and codes.
"""

from __future__ import annotations

import argparse
import json
import random
import string
from dataclasses import dataclass

from assistant.redact import Redactor, luhn_ok

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
        covered = set()
        for f in redactor.find(text):
            covered |= set(range(f.start, f.end))
        ok = all(i in covered for i in range(start, start + len(value)) if not text[i].isspace())
        by_type[kind][1] += 1
        if ok:
            caught += 1
            by_type[kind][0] += 1
        else:
            misses.append(f"{kind}: {text!r} -> {redactor.redact(text)!r}")
    benign = benign_messages()
    flagged = sum(1 for t in benign if redactor.find(t))
    return RedactionReport(len(cases), caught, {k: tuple(v) for k, v in by_type.items()}, len(benign), flagged, misses)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m assistant.redact_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=800)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    report = evaluate(args.n, args.seed)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"recall {report.recall:.2%} ({report.caught}/{report.cases})")
    for kind, (c, n) in report.by_type.items():
        print(f"  {kind:<8} {c}/{n}")
    print(f"false positives: {report.benign_flagged} of {report.benign} PII-free customer messages")
    for miss in report.misses[:20]:
        print("  missed", miss)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
