"""Consumer-style rewrites of MedQuAD questions: lay wording, personal background, typos (seeded).

    python -m index.noisy ../shared/data/medquad_dev/questions.jsonl --start 0 --step 2 --seed 0 > noisy_even.jsonl

The hybrid-fusion fit (`python -m index.fit_fusion`) trains on these rewrites of the even-numbered
questions, next to the clean ones; the benchmark also reports on rewrites of the odd ones. A rewrite
depends only on (seed, question text), so it is the same on every run and every machine.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string

# MedQuAD's question templates and the ways a worried person might ask the same thing ({x}: the topic).
_TEMPLATES: list[tuple[re.Pattern, tuple[str, ...]]] = [(re.compile(p, re.I), r) for p, r in [
    (r"^what is \(are\) (.+?)\s*\?*$", ("what is {x} exactly", "can someone explain what {x} is",
                                        "i keep hearing about {x}, what is it", "what does {x} mean")),
    (r"^what are the symptoms of (.+?)\s*\?*$", ("what signs should i look out for with {x}",
                                                  "how do you know if you have {x}", "what does {x} feel like")),
    (r"^how to diagnose (.+?)\s*\?*$", ("how do doctors check for {x}", "what tests show if you have {x}",
                                        "how would i find out if i have {x}")),
    (r"^what are the treatments for (.+?)\s*\?*$", ("how is {x} treated", "what can be done for {x}",
                                                    "is there any medicine or cure for {x}")),
    (r"^what research \(or clinical trials\) is being done for (.+?)\s*\?*$",
     ("are there any new studies or trials on {x}", "is anyone working on new treatments for {x}")),
    (r"^what is the outlook for (.+?)\s*\?*$", ("what is the prognosis with {x}", "can you get better from {x}",
                                                "what happens in the long run with {x}")),
    (r"^who is at risk for (.+?)\??\s*\?*$", ("who gets {x}", "am i likely to get {x}",
                                              "who is more likely to end up with {x}")),
    (r"^what causes (.+?)\s*\?*$", ("why do people get {x}", "what gives you {x}", "where does {x} come from")),
    (r"^what to do for (.+?)\s*\?*$", ("what should i do about {x}", "how do i cope with {x} day to day")),
    (r"^how to prevent (.+?)\s*\?*$", ("how can i avoid getting {x}", "is there a way to stop {x}")),
    (r"^what are the stages of (.+?)\s*\?*$", ("how bad can {x} get, what are the stages",)),
    (r"^what are the complications of (.+?)\s*\?*$", ("what problems can {x} lead to",)),
    (r"^how many people are affected by (.+?)\s*\?*$", ("how common is {x}",)),
    (r"^is (.+?) inherited\s*\?*$", ("does {x} run in families",)),
    (r"^what are the genetic changes related to (.+?)\s*\?*$", ("what genes are behind {x}",)),
]]

# Personal background with nothing specific to any answer: what real messages carry around the question.
_BACKGROUND = (
    "my mom is 72 and lives on her own", "i am a 34 year old woman", "my husband and i have been together 20 years",
    "we saw a doctor last week but did not really understand what he said",
    "i have been reading stuff online for days and it is getting confusing", "sorry if this is a silly question",
    "my son is 8 and my daughter is 12", "i don't have insurance right now so i want to know before going in",
    "english is not my first language", "i work nights so it is hard to get an appointment",
    "my family doctor retired and the new one is always busy", "i have been under a lot of stress lately",
    "my sister told me to ask here", "we just moved to a new town", "i am 58 and otherwise pretty healthy",
    "my dad had a checkup last month", "i am a student and do not know much about medicine",
    "a friend of mine was talking about this at dinner", "i have two kids and a full time job",
    "we are trying to plan for the next few years",
)
_CLOSING = ("thanks in advance", "any help is appreciated", "thank you so much", "please help",
            "i am really worried", "i would like a simple answer")
_KEYBOARD = "qwertyuiop asdfghjkl zxcvbnm"


def _typo(word: str, rng: random.Random) -> str:
    """One character-level slip: swap, drop, double or hit a neighbouring key."""
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "drop", "double", "neighbour"))
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "drop":
        return word[:i] + word[i + 1:]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    row = next((r for r in _KEYBOARD.split() if word[i] in r), None)
    if row is None:
        return word
    j = row.index(word[i])
    near = [row[n] for n in (j - 1, j + 1) if 0 <= n < len(row)]
    return word[:i] + rng.choice(near) + word[i + 1:]


def _topic(text: str, rng: random.Random) -> str:
    text = re.sub(r"^what i need to know about ", "", text, flags=re.I)
    if rng.random() < 0.6:  # people rarely type the bracketed synonym of a title
        text = re.sub(r"\s*\([^)]*\)", "", text)
    return text.strip().rstrip("?").strip()


def noisy_question(question: str, seed: int = 0) -> str:
    """A lay, lower-case version of one question with 1-3 typos and 0-3 sentences of personal background;
    the same for the same (seed, question)."""
    rng = random.Random(f"{seed}:{question}")
    core = question.strip()
    for pattern, rewrites in _TEMPLATES:
        match = pattern.match(core)
        if match:
            core = rng.choice(rewrites).format(x=_topic(match.group(1), rng))
            break
    before = rng.sample(_BACKGROUND, rng.choice((0, 1, 2, 3)))  # short to long messages
    after = [rng.choice(_CLOSING) + "."] if rng.random() < 0.5 else []
    text = " ".join([*(b + "." for b in before), core + "?", *after]).lower()
    if rng.random() < 0.7:
        text = text.translate(str.maketrans("", "", string.punctuation.replace("'", "")))
    words = text.split()
    long_words = [n for n, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    for n in rng.sample(long_words, min(len(long_words), rng.randint(1, 3))):
        words[n] = _typo(words[n], rng)
    return " ".join(words)


def with_typos(text: str, count: int, seed: int = 0) -> str:
    """`text` with one slip (as noisy_question makes them) in each of `count` of its words of 5+ letters,
    chosen at random; the same for the same (seed, text)."""
    rng = random.Random(f"typos:{seed}:{text}")
    words = text.split(" ")
    long_words = [n for n, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    for n in rng.sample(long_words, min(len(long_words), count)):
        words[n] = _typo(words[n], rng)
    return " ".join(words)


# How customers wrap a question in chat: each message gets one opening and one closing, seeded by its text.
# Not the list the assistant's own clean-up was written from (assistant/understanding/pleasantries.py):
# some of these it does not know ("hey hey", "thanks a bunch").
_OPENINGS = ("hi there! ", "Hello, ", "hey, ", "Good morning. ", "hi team, ", "hey hey ", "hope you're well - ",
             "Hello! Quick question: ", "", "ok so ")
_CLOSINGS = (" thanks so much 🙏", " Thank you!", " thx", " thanks in advance :)", " Cheers.", " appreciate it!!",
             " thanks a bunch", " 😊", "", " ty")
# A sentence of context before the question, as customers write it; nothing in it answers or asks anything.
_CONTEXT = ("I've been a customer for years and never had to ask this before.",
            "My wife usually handles this stuff but she's away this week.",
            "I tried finding it on your website but got lost.", "Sorry if this is a dumb question.",
            "I'm helping my elderly father sort out a few things.", "We just moved to the area last month.",
            "I'm on my lunch break so I don't have long.", "A friend told me to ask here.",
            "I work nights so it's hard for me to call during the day.",
            "This is my first time dealing with any of this.",
            "I'm trying to get everything organized before the holidays.",
            "English is my second language, so sorry for any mistakes.")
STYLES = ("as-written", "no-punctuation", "greeting", "upper-case", "context")


def in_style(text: str, style: str, seed: int = 0) -> str:
    """`text` as a customer might type it: `no-punctuation` (lower case, no punctuation but $ and %: "whats"),
    `greeting` (a seeded opening and closing around it, such as "hi there! ... thanks so much"), `upper-case`
    (every letter a capital: "WHATS THE FEE FOR A WIRE?"), `context` (a seeded sentence of personal context
    before it: "We just moved to the area last month. ..."), or as written."""
    if style == "no-punctuation":
        return " ".join(re.sub(r"[^\w\s$%]", " ", re.sub(r"['’]", "", text.lower())).split())
    if style == "greeting":
        rng = random.Random(f"greeting:{seed}:{text}")
        return f"{rng.choice(_OPENINGS)}{text}{rng.choice(_CLOSINGS)}".strip()
    if style == "upper-case":
        return text.upper()
    if style == "context":
        return f"{random.Random(f'context:{seed}:{text}').choice(_CONTEXT)} {text}"
    if style != "as-written":
        raise ValueError(f"unknown style {style!r}: choose one of {', '.join(STYLES)}")
    return text


def noisy_questions(questions: list[dict], seed: int = 0) -> list[dict]:
    """The same records with `question` rewritten by noisy_question (other keys kept)."""
    return [{**q, "question": noisy_question(q["question"], seed)} for q in questions]


def main(argv: list[str] | None = None) -> int:
    from index.evaluate import load_questions

    p = argparse.ArgumentParser(prog="python -m index.noisy", description=__doc__.split("\n\n")[0])
    p.add_argument("questions", help="a questions JSONL file ({\"question\", \"relevant\"} per line)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first question (0-based)")
    p.add_argument("--step", type=int, default=1, help="take every step-th question")
    args = p.parse_args(argv)
    for q in noisy_questions(load_questions(args.questions)[args.start::args.step], args.seed):
        print(json.dumps(q, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
