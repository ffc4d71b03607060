"""Generation speed of each back end, side by side in one run (`make bench-generate`).

The prompt is a real RAG prompt of about 1,000 tokens: the bank pack's system prompt with passages
from its documents, then a question that asks for a long answer. Each run starts its system message
with a run number, so no back end can reuse a cached prompt prefix (real questions retrieve different
passages). Greedy decoding, up to --max-new-tokens tokens; decode tokens/s counts the tokens after
the first over the time after the first; time to first token includes reading the prompt.

Back ends: transformers (plain `generate`; on CUDA also `generate` with the static cache, which
transformers compiles, and our greedy loop with the one-token step in a CUDA graph, the default there),
llama-cpp in process, and openai against llama.cpp's server started on loopback (or --base-url, to
measure a vLLM/TGI server). A back end that is not installed is listed as skipped.

    python -m assistant.tools.bench_generate [--runs 3] [--max-new-tokens 256] [--json runs/generate.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import sys
from collections import deque
from pathlib import Path

from assistant.answering.prompt import build_messages
from assistant.llm import llamacpp
from assistant.llm.generate import GenerationSettings, GenerationStats, Generator, TextGenerator
from assistant.llm.models import load_llm
from assistant.packs import load_pack
from index.ingest import load_document
from index.search import Hit

QUESTION = "Explain in detail, one passage at a time, every fee, limit and rule that these passages describe."


def rag_messages(tokenizer, target_tokens: int = 1000, run: int = 0) -> list[dict]:
    """The bank pack's prompt with as many passages (≤ 900 characters each) as fit ~target_tokens."""
    pack = load_pack("bank")
    texts = []
    for path in sorted(pack.docs_dir.rglob("*")):
        if path.is_file():
            try:
                doc = load_document(path)
            except Exception:  # the bench uses what parses; the index tests cover the rest
                continue
            text = " ".join(doc.text.split())
            texts += [text[i:i + 900] for i in range(0, len(text), 900)]
    hits, messages = [], []
    for text in texts:
        hits.append(Hit(chunk_id=str(len(hits)), source="bench", title="bench", text=text, score=1.0))
        candidate = build_messages(f"Conversation {run}. {pack.system_prompt}", QUESTION, hits)
        n = len(tokenizer.apply_chat_template(candidate, add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"])
        if n > target_tokens and messages:
            break
        messages = candidate
    return messages


def measure(generator: TextGenerator, tokenizer, runs: int, max_new_tokens: int) -> dict:
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    list(generator.stream(rag_messages(tokenizer, run=-1), settings))  # warm-up (and CUDA graph capture)
    rows = []
    for run in range(runs):
        stats = GenerationStats()
        deque(generator.stream(rag_messages(tokenizer, run=run), settings, stats), maxlen=0)  # run it out
        rows.append(stats)
    return {"prompt_tokens": rows[0].prompt_tokens,
            "new_tokens": statistics.median(r.new_tokens for r in rows),
            "ttft_ms": statistics.median(r.ttft_ms for r in rows),
            "tokens_per_s": statistics.median(r.tokens_per_s for r in rows)}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m assistant.tools.bench_generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--backends", default="transformers,llama-cpp,openai")
    p.add_argument("--base-url", default=None, help="measure this OpenAI-compatible server instead of "
                   "starting llama.cpp's server")
    p.add_argument("--model", default=None, help="the served model's name with --base-url")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    import torch

    from index.quiet import quiet_libraries

    quiet_libraries()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    llm = load_llm("bundled", device=device)
    tokenizer = llm.tokenizer
    wanted = args.backends.split(",")
    results: dict[str, dict] = {}

    def run(name: str, make) -> None:
        print(f"... {name}", file=sys.stderr, flush=True)
        try:
            generator = make()
        except Exception as exc:  # not installed, no server: say so in the table
            results[name] = {"skipped": str(exc).splitlines()[0]}
            return
        results[name] = measure(generator, tokenizer, args.runs, args.max_new_tokens)

    if "transformers" in wanted:
        run(f"transformers ({device}, plain generate)", lambda: Generator(llm, static_cache=False))
        if cuda:
            run("transformers (cuda, generate + static cache, compiled by transformers)",
                lambda: Generator(llm, static_cache=True, graph_decode=False))
            run("transformers (cuda, own greedy loop, step in a CUDA graph: the default)",
                lambda: Generator(llm, static_cache=True))
    if "llama-cpp" in wanted:
        run(f"llama-cpp ({'cuda' if cuda else 'cpu'}, in process)",
            lambda: llamacpp.LlamaCppGenerator("bundled", gpu_layers=-1 if cuda else 0))
    server = None
    if "openai" in wanted:
        from assistant.llm.openai_backend import OpenAIGenerator

        if args.base_url:
            run(f"openai ({args.base_url})", lambda: OpenAIGenerator(args.base_url, args.model))
        elif llamacpp.available():
            try:
                server, url = llamacpp.start_server(llamacpp.model_file("bundled"), _port())
                run("openai (llama.cpp server on loopback)", lambda: OpenAIGenerator(url))
            except RuntimeError as exc:
                results["openai (llama.cpp server on loopback)"] = {"skipped": str(exc)}
        else:
            results["openai (llama.cpp server on loopback)"] = {"skipped": llamacpp.INSTALL_HINT}
    if server is not None:
        server.terminate()
        server.wait(timeout=30)

    baseline = next((r for name, r in results.items() if name.startswith("transformers") and "skipped" not in r),
                    None)
    where = torch.cuda.get_device_name() if cuda else f"{platform.processor() or platform.machine()} CPU, " \
        f"{llamacpp.cpu_threads()} cores"
    print(f"\nGeneration back ends on {where}: the bundled SmolLM2-135M, a {args.runs}-run median, greedy, "
          f"up to {args.max_new_tokens} new tokens\n")
    print("| back end | prompt tokens | new tokens | time to first token | decode tokens/s | decode vs first row |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        if "skipped" in r:
            print(f"| {name} | skipped: {r['skipped']} | | | | |")
            continue
        ratio = (f"{r['tokens_per_s'] / baseline['tokens_per_s']:.1f}×" if baseline and baseline["tokens_per_s"]
                 else "— (no transformers row)")
        prompt = r["prompt_tokens"] or "— (not reported)"
        print(f"| {name} | {prompt} | {r['new_tokens']:.0f} | {r['ttft_ms'] / 1000:.2f} s | "
              f"{r['tokens_per_s']:.1f} | {ratio} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": where, "runs": args.runs, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
