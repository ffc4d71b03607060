"""The assistant from the terminal.

    python -m assistant ask "How much is an international wire?" --domain bank [--json]
    python -m assistant chat --domain hospital
    python -m assistant prepare [--domain bank --domain hospital]   # convert the model, build the indexes
    python -m assistant generate "PROMPT" --backend llama-cpp --json  # the LLM alone: text and speed
    python -m assistant fit-grounding bank.jsonl --check hospital.jsonl --out grounding.json
    python -m assistant serve --port 8000 --tokens-file tokens.txt [--domain bank] [--workers 2]  # HTTP API
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

from assistant.compliance.audit import POSTGRES_SCHEMES
from assistant.config import (
    ANSWER_MODES,
    BACKENDS,
    CAUTION,
    EVIDENCE_ENCODERS,
    GGUF_QUANTS,
    INTENT_MODES,
    SEARCH_MODES,
    AssistantConfig,
)
from assistant.packs import available_packs
from assistant.tools.evidence_fit import add_fit_evidence_command
from assistant.tools.grounding_fit import add_fit_command
from assistant.understanding.intents_cli import add_intents_commands
from index.errors import SettingError, run_cli
from index.noisy import STYLES

AUDIT_URL_HELP = ("the audit log in PostgreSQL, postgresql://user@host:port/database (needs the postgres extra; "
                  "default $RA_AUDIT_URL; unset: SQLite under the data directory)")


def add_config_args(p: argparse.ArgumentParser, *, many_domains: bool = False) -> None:
    defaults = AssistantConfig.__dataclass_fields__
    if many_domains:
        p.add_argument("--domain", action="append", default=None,
                       help=f"a domain pack to serve, repeatable (default: every built-in pack: "
                            f"{', '.join(available_packs())}); a name or a pack directory")
    else:
        p.add_argument("--domain", default=None,
                       help=f"domain pack: {', '.join(available_packs())} or a pack directory (default: "
                            f"{defaults['domain'].default})")
    p.add_argument("--model", default=None,
                   help="LLM: bundled, a Hugging Face id, a local directory or a .gguf (default: bundled)")
    p.add_argument("--embedder", default=None,
                   help="embedder: bundled, a Hugging Face id or a local directory (default: bundled)")
    p.add_argument("--adapter", default=None, help="PEFT adapter directory from `python -m finetune`")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--top-k", type=int, default=None,
                   help=f"passages given to the model (default: {defaults['top_k'].default})")
    p.add_argument("--min-score", type=float, default=None, help="passages below this similarity count as "
                   f"irrelevant (default: {defaults['min_score'].default})")
    p.add_argument("--search-mode", default=None, choices=SEARCH_MODES,
                   help="how passages are found (default: hybrid = BM25 + dense, tuned)")
    p.add_argument("--no-spelling", dest="spelling", action="store_false", default=None,
                   help="search messages as typed (default: misspelled words are corrected to the documents' words)")
    p.add_argument("--no-glossary", dest="glossary", action="store_false", default=None,
                   help="search without the pack's glossary (default: a message that uses only an everyday word for "
                        "a term of the documents, e.g. 'childrens floor' for Pediatrics, is searched with the term)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help=f"(default: {defaults['max_new_tokens'].default})")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (the default)")
    p.add_argument("--grounding", default=None, help="grounding-check weights fitted to this model "
                   "(`fit-grounding`; default: the shipped ones, fitted to the bundled model)")
    p.add_argument("--answer-mode", default=None, choices=ANSWER_MODES,
                   help="evidence: the LLM writes from the selected document sentences, every sentence is "
                        "verified, and the quote follows; quote: the document sentences only, no LLM; "
                        "generative: the LLM reads whole passages (the old path, for strong served models); "
                        "default: evidence")
    p.add_argument("--caution", default=None, choices=CAUTION,
                   help="how sure the evidence must be to be given as the answer rather than as the closest the "
                        "documents come, with a caveat: relaxed, standard (default), cautious or strict; stricter "
                        "catches more questions the documents do not answer and puts a caveat on more correct "
                        "answers (README, 'How cautious'); or $RA_CAUTION")
    p.add_argument("--pool-k", type=int, default=None,
                   help=f"passages retrieved for evidence selection (default: {defaults['pool_k'].default})")
    p.add_argument("--pool-min-score", type=float, default=None, help="evidence pool: passages below this "
                   f"similarity are not considered (default: {defaults['pool_min_score'].default})")
    add_intent_mode_arg(p)
    add_evidence_encoder_arg(p)
    add_context_encoder_arg(p)
    p.add_argument("--audit-url", default=None, help=AUDIT_URL_HELP)
    add_backend_args(p)
    add_settings_arg(p)


def add_intent_mode_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--intent-mode", default=None, choices=INTENT_MODES,
                   help="the pack's intent classifier, trained on first use and cached: finetune (the encoder tuned "
                        "on the pack's intents, about a minute on 2 cores, more accurate) or linear (seconds); "
                        "default: finetune, or $RA_INTENT_MODE")


def add_evidence_encoder_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--evidence-encoder", default=None, choices=EVIDENCE_ENCODERS,
                   help="a second opinion on the chosen evidence: tuned (the embedder tuned on the pack's own "
                        "documents, about 2.5 minutes on 2 cores once per set of documents, then cached, judges the "
                        "evidence too; what it doubts is shown as the closest the documents come: more near-misses "
                        "caught, a few more caveats, README 'A second opinion') or base (none); default: tuned, or "
                        "$RA_EVIDENCE_ENCODER")


def add_context_encoder_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--context-encoder", default=None,
                   help="the encoder that reads each evidence sentence with its headings: auto (the bundled larger "
                        "encoder, all-mpnet-base-v2, where installed; else the embedder), same (the embedder), "
                        "bundled-large, a model directory or a hub id; default: auto, or $RA_CONTEXT_ENCODER")


def add_settings_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings", default=None, help="a TOML settings file (default $RA_SETTINGS); read before the "
                   "environment (RA_MODEL, RA_BACKEND, RA_AUDIT_URL, ...) and these options, which override it")


def add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help="generation back end (default auto: openai with --base-url, transformers on GPU, "
                        "llama-cpp on CPU when installed)")
    p.add_argument("--base-url", default=None,
                   help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (default $RA_OPENAI_BASE_URL); "
                        "the key comes from $RA_OPENAI_API_KEY")
    p.add_argument("--timeout", dest="request_timeout", type=float, default=None,
                   help="openai back end: seconds to wait for the server (default: 60)")
    p.add_argument("--retries", type=int, default=None, help="openai back end: tries after the first (default: 2)")
    p.add_argument("--gguf-quant", default=None, choices=GGUF_QUANTS,
                   help="llama-cpp back end: the type llama.cpp runs (auto: the bundled Q4_1 model as Q8_0, "
                        "other files as they are)")


def config_from(args: argparse.Namespace) -> AssistantConfig:
    """The settings: defaults, then --settings / $RA_SETTINGS, then the environment, then these options."""
    names = {f.name for f in fields(AssistantConfig)}
    return AssistantConfig.load(getattr(args, "settings", None),
                                **{k: v for k, v in vars(args).items() if k in names})


def cmd_ask(args: argparse.Namespace) -> int:
    from assistant.pipeline import Assistant

    bot = Assistant(config_from(args), warm=False)
    live = sys.stdout.isatty() and not args.json  # stream tokens to a terminal; pipes get the final text
    shown = ""
    response = None
    for response in bot.stream(args.question):
        if live and not response.done:
            sys.stdout.write(response.answer[len(shown):])
            sys.stdout.flush()
            shown = response.answer
    if args.json:
        data = response.to_dict()
        out = {k: data[k] for k in ("answer", "sources", "intent", "action", "confidence", "latency_ms")}
        out.update({k: data[k] for k in ("ticket", "grounded", "model", "intent_confidence", "caveat", "refused",
                                         "support", "turn_id", "answer_mode", "query", "corrections", "offer",
                                         "evidence", "sentences")})
        print(json.dumps(out, ensure_ascii=False))
        return 0
    if not shown:
        print(response.answer)
    elif response.answer != shown:  # citations attributed after streaming: show the final text too
        print(f"\n\n{response.answer}")
    else:
        print()
    print_sources(response)
    return 0


def print_sources(response) -> None:
    for s in response.sources:
        if s.cited:
            page = f", p. {s.page}" if s.page else ""
            print(f"  [{s.n}] {s.title} ({s.source}{page}) score {s.score:.2f}")


def cmd_chat(args: argparse.Namespace) -> int:
    from assistant.pipeline import Assistant

    bot = Assistant(config_from(args))
    print(f"{bot.pack.assistant_name} — {bot.pack.institution}. Empty line or Ctrl-D to quit.")
    history: list[tuple[str, str]] = []
    while True:
        try:
            message = input("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not message:
            return 0
        sys.stdout.write("bot> ")
        shown = ""
        response = None
        for response in bot.stream(message, history):
            if not response.done:
                sys.stdout.write(response.answer[len(shown):])
                sys.stdout.flush()
                shown = response.answer
        if response.answer != shown:  # citations were attributed, or a scripted reply: show the final text
            sys.stdout.write(("\n     " if shown else "") + response.answer)
        print()
        print_sources(response)
        history.append((message, response.answer))


def cmd_prepare(args: argparse.Namespace) -> int:
    """Convert the default model, build each pack's index and train its intent classifier, so the first chat
    starts quickly."""
    from assistant.llm.models import load_llm
    from assistant.pipeline import Assistant

    started = time.time()
    base = AssistantConfig.load(args.settings, model=args.model, embedder=args.embedder)
    llm = load_llm(base.model)
    print(f"model {base.model}: {'converted' if llm.converted_now else 'cached'} at {llm.path} "
          f"({llm.load_seconds:.1f} s)")
    from assistant.llm import llamacpp

    if llamacpp.available() and (base.model == "bundled" or base.model.lower().endswith(".gguf")):
        print(f"llama.cpp model: {llamacpp.model_file(base.model)}")
    for domain in args.domain or available_packs():
        bot = Assistant(replace(base, domain=domain), progress=True)
        report = bot.index_report
        state = report.summary().splitlines()[0] if report else "up to date"
        print(f"index {domain}: {state} ({bot.config.index_dir})")
        print(f"intents {domain}: {bot.classifier.mode} classifier, {len(bot.classifier.labels)} labels")
    print(f"ready in {time.time() - started:.1f} s")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from assistant.pipeline import Assistant
    from assistant.tools.evaluate import evaluate, evaluate_dev

    reports, generator, embedder, dumped = [], None, None, []
    for domain in [args.domain] if args.domain else available_packs():
        config = config_from(argparse.Namespace(**{**vars(args), "domain": domain}))
        bot = Assistant(config, generator=generator, embedder=embedder)
        if config.answer_mode != "quote":
            generator = bot.generator
        embedder = bot.embedder
        if args.set in ("eval", "both"):
            reports.append(("eval", evaluate(bot, limit=args.limit, progress=not args.json, dump=dumped)))
        for split in ("dev", "dev2"):
            if args.set in (split, "both") and (bot.pack.root / split).is_dir():
                reports.append((split, evaluate_dev(bot, limit=args.limit, progress=not args.json, dump=dumped,
                                                    split=split, typos=args.typos, style=args.style)))
        if args.set in ("fit", "fit2", "fit3", "fit4"):
            reports.append((args.set, evaluate_dev(bot, limit=args.limit, progress=not args.json, dump=dumped,
                                                   split=args.set, typos=args.typos, style=args.style)))
    if args.dump:
        Path(args.dump).write_text("".join(json.dumps(d) + "\n" for d in dumped))
    if args.json:
        print(json.dumps([{"set": name, **r.to_dict()} for name, r in reports], indent=2))
    else:
        for name, report in reports:
            title = {"dev": "customer-phrased dev set", "dev2": "second customer-phrased dev set",
                     "fit": "customer-phrased fitting set", "fit2": "second customer-phrased fitting set",
                     "fit3": "third customer-phrased set", "fit4": "fourth customer-phrased set"}.get(
                name, "eval set (written beside the code)")
            print(f"\n== {report.domain}: {title} ==\n{report.table()}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """The LLM alone, without retrieval: for checking a back end and measuring its speed."""
    from assistant.llm.backends import make_generator
    from assistant.llm.generate import GenerationSettings, GenerationStats

    config = config_from(args)
    settings = GenerationSettings(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                  stop=tuple(args.stop or ()))
    generator = make_generator(config.backend, model=config.model, adapter=config.adapter, device=config.device,
                               base_url=config.base_url, timeout=config.request_timeout, retries=config.retries,
                               gguf_quant=config.gguf_quant)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}]
    stats = GenerationStats()
    live = sys.stdout.isatty() and not args.json
    text = ""
    for piece in generator.stream(messages, settings, stats):
        text += piece
        if live:
            sys.stdout.write(piece)
            sys.stdout.flush()
    if args.json:
        print(json.dumps({"text": text, "tokens": stats.new_tokens, "ttft_ms": round(stats.ttft_ms, 1),
                          "tokens_per_s": round(stats.tokens_per_s, 1), "prompt_tokens": stats.prompt_tokens,
                          "finish_reason": stats.finish_reason, "backend": generator.backend,
                          "model": generator.model_id}, ensure_ascii=False))
    else:
        print(("\n" if live else text + "\n") + f"[{generator.backend}: {stats.new_tokens} tokens, first after "
              f"{stats.ttft_ms:.0f} ms, {stats.tokens_per_s:.1f} tokens/s]", file=sys.stderr if live else sys.stdout)
    return 0


def _audit_log(args: argparse.Namespace):
    """--db (a file or a URL) or --audit-url; else where the assistant writes: $RA_AUDIT_URL or the data dir."""
    from assistant.compliance.audit import AuditLog

    if args.db and args.audit_url:
        raise SettingError("--db and --audit-url both name the audit log: give one")
    settings = {"data_dir": Path(args.data_dir)} if args.data_dir else {}
    if url := args.audit_url or (args.db if args.db and args.db.startswith(POSTGRES_SCHEMES) else None):
        settings["audit_url"] = url
    config = AssistantConfig.load(**settings)  # the environment's RA_AUDIT_URL / RA_DATA_DIR as the assistant reads them
    target = Path(args.db) if args.db and not url else config.audit_target
    if isinstance(target, Path) and not target.exists():
        raise SettingError(f"no audit log at {target}: it is created by the first answer (data dir: {config.data_dir}; "
                         "a PostgreSQL one is named by --audit-url or $RA_AUDIT_URL)")
    return AuditLog(target)


def cmd_audit_purge(args: argparse.Namespace) -> int:
    from assistant.compliance.audit import parse_since

    before = parse_since(args.before)
    counts = _audit_log(args).purge(before, by=args.by)
    print(json.dumps({"purged_before": args.before, **counts}))
    return 0


def cmd_audit_erase(args: argparse.Namespace) -> int:
    counts = _audit_log(args).erase(args.session, by=args.by)
    print(json.dumps({"erased_session": args.session, **counts}))
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    from assistant.compliance.audit import parse_since

    log = _audit_log(args)
    since = parse_since(args.since)
    if args.what == "tickets":
        rows = [r for r in log.tickets() if since is None or r["time"] >= since]
        sys.stdout.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    else:
        sys.stdout.write(log.export(args.format, since=since))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from assistant.serving.serve import ServeConfig, serve

    domains = args.domain or available_packs()
    config = config_from(argparse.Namespace(**{**vars(args), "domain": domains[0]}))
    return serve(ServeConfig(tokens_file=args.tokens_file, domains=domains, assistant=config, host=args.host,
                             port=args.port, workers=args.workers, threads=args.threads,
                             max_pending=args.max_pending, max_request_bytes=args.max_request_kb * 1024))


def add_serve_command(sub) -> None:
    serve = sub.add_parser("serve", help="the assistant as an OpenAI-compatible HTTP API (see assistant/serving/api.py)")
    serve.add_argument("--host", default="127.0.0.1", help="0.0.0.0 listens on every interface")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--tokens-file", default=os.environ.get("RA_API_TOKENS_FILE"),
                       required=not os.environ.get("RA_API_TOKENS_FILE"),
                       help="API tokens, one a line as 'name:token' (the name is the audit log's user) or a bare "
                            "token (default $RA_API_TOKENS_FILE)")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes sharing the port (SO_REUSEPORT), each loading its own models")
    serve.add_argument("--threads", type=int, default=8, help="answers worked on at once in one process")
    serve.add_argument("--max-pending", type=int, default=64,
                       help="requests one process holds, running or waiting; more are refused with 503")
    serve.add_argument("--max-request-kb", type=int, default=256, help="larger request bodies get 413")
    serve.add_argument("--data-dir", default=None,
                       help="indexes and the audit log (default $RA_DATA_DIR or ~/.local/share/regulated-assistant)")
    add_config_args(serve, many_domains=True)
    serve.set_defaults(func=cmd_serve)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m assistant", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="answer one question")
    ask.add_argument("question")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_args(ask)
    ask.set_defaults(func=cmd_ask)
    chat = sub.add_parser("chat", help="interactive multi-turn chat in the terminal")
    add_config_args(chat)
    chat.set_defaults(func=cmd_chat)
    ev = sub.add_parser("eval", help="measure answers on each pack's own question sets")
    add_config_args(ev)
    ev.set_defaults(domain=None)
    ev.add_argument("--limit", type=int, default=None, help="at most N questions of each set")
    ev.add_argument("--set", default="both", choices=("eval", "dev", "dev2", "both", "fit", "fit2", "fit3", "fit4"),
                    help="dev: the customer-phrased set written from the documents only (never fitted on); "
                         "dev2: a second one, by another author, measured once per change that lands; "
                         "fit, fit2: the customer-phrased sets that thresholds are fitted on (for trying a change); "
                         "fit3: a third, written 2026-12-01 and held out when first measured; fit4: a fourth, "
                         "written 2026-12-03; "
                         "both: eval, dev and dev2")
    ev.add_argument("--typos", type=int, default=0,
                    help="dev/fit sets: put N seeded typos into every message (robustness to typing)")
    ev.add_argument("--style", default="as-written", choices=STYLES,
                    help="dev/fit sets: type every message without punctuation, wrapped in a greeting and thanks, in "
                         "capitals, or after a sentence of personal context")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--dump", default=None, help="write every answer's confidence features to this JSONL file")
    ev.set_defaults(func=cmd_eval)
    gen = sub.add_parser("generate", help="run the LLM alone on a prompt: text, tokens, speed")
    gen.add_argument("prompt")
    gen.add_argument("--system", default=None, help="a system message before the prompt")
    gen.add_argument("--stop", action="append", help="stop before this string (repeatable)")
    gen.add_argument("--json", action="store_true",
                     help='print {"text", "tokens", "ttft_ms", "tokens_per_s", ...}')
    gen.add_argument("--model", default=None, help="bundled (the default), a Hugging Face id, a directory, a "
                     ".gguf, or the served model's name with --backend openai")
    gen.add_argument("--adapter", default=None)
    gen.add_argument("--device", default=None)
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0)
    add_backend_args(gen)
    add_settings_arg(gen)
    gen.set_defaults(func=cmd_generate)
    prep = sub.add_parser("prepare", help="convert the model and build the domain indexes")
    prep.add_argument("--domain", action="append", help="repeatable; default: every built-in pack")
    prep.add_argument("--model", default=None, help="(default: bundled, or $RA_MODEL)")
    prep.add_argument("--embedder", default=None, help="(default: bundled, or $RA_EMBEDDER)")
    add_settings_arg(prep)
    prep.set_defaults(func=cmd_prepare)
    audit = sub.add_parser("audit", help="read the audit log (PII already redacted)")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    export = audit_sub.add_parser("export", help="print one record per answered turn")
    export.add_argument("--since", default=None, help="ISO date/time (2026-11-26T09:00) or an age (24h, 7d)")
    export.add_argument("--format", default="jsonl", choices=("jsonl", "csv"))
    export.add_argument("--tickets", dest="what", action="store_const", const="tickets", default="turns",
                        help="print the handoff tickets instead (JSONL)")
    purge = audit_sub.add_parser("purge", help="delete turns, feedback, tickets and events older than a date "
                                 "(retention); the purge itself is recorded")
    purge.add_argument("--before", required=True, help="ISO date/time (2026-01-01) or an age (90d)")
    erase = audit_sub.add_parser("erase", help="delete everything recorded for one session (right to erasure); "
                                 "the erasure itself is recorded, with the session's digest only")
    erase.add_argument("--session", required=True, help="the session id (the audit export's session_id)")
    for cmd, func in ((export, cmd_audit_export), (purge, cmd_audit_purge), (erase, cmd_audit_erase)):
        cmd.add_argument("--data-dir", default=None, help="default: $RA_DATA_DIR or ~/.local/share/regulated-assistant")
        cmd.add_argument("--db", default=None, help="an audit.sqlite file, or a postgresql:// URL")
        cmd.add_argument("--audit-url", default=None, help=AUDIT_URL_HELP)
        cmd.set_defaults(func=func)
    for cmd in (purge, erase):
        cmd.add_argument("--by", default=os.environ.get("USER"), help="who does it, for the record (default $USER)")
    add_serve_command(sub)
    add_intents_commands(sub)
    add_fit_command(sub)
    add_fit_evidence_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(parser(), argv)  # a UserError is one line, anything else a bug with its traceback


if __name__ == "__main__":
    sys.exit(main())
