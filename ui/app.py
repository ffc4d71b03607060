"""Gradio chat over the same Assistant the CLI uses. Builds no model at import: assistants load on first use.

    python -m ui [--host 127.0.0.1] [--port 7860]
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import gradio as gr

from assistant.config import AssistantConfig
from assistant.packs import available_packs, load_pack
from assistant.pipeline import Assistant, Response


class AssistantPool:
    """One Assistant per domain, created on first use and shared by all sessions (the models load once)."""

    def __init__(self, base: AssistantConfig | None = None):
        self.base = base or AssistantConfig()
        self._bots: dict[str, Assistant] = {}
        self._lock = threading.Lock()

    def get(self, domain: str) -> Assistant:
        with self._lock:
            if domain not in self._bots:
                first = next(iter(self._bots.values()), None)  # domains share the loaded models
                self._bots[domain] = Assistant(replace(self.base, domain=domain),
                                               generator=first.generator if first else None,
                                               embedder=first.embedder if first else None)
            return self._bots[domain]


def format_sources(response: Response) -> str:
    if not response.sources:
        return ""
    lines = []
    for s in response.sources:
        mark = "**cited**" if s.cited else "retrieved"
        page = f", p. {s.page}" if s.page else ""
        snippet = " ".join(s.text.split())[:180]
        lines.append(f"- [{s.n}] {mark} · *{s.title}* ({s.source}{page}) · score {s.score:.2f}\n  > {snippet}…")
    return "**Sources**\n" + "\n".join(lines)


def build_demo(pool: AssistantPool | None = None) -> gr.Blocks:
    pool = pool or AssistantPool()
    domains = available_packs()

    def respond(message: str, history: list[dict], domain: str) -> Iterator[str]:
        bot = pool.get(domain)
        pairs = []
        for turn in history:
            if turn["role"] == "user":
                pairs.append([str(turn["content"]), ""])
            elif pairs:
                pairs[-1][1] = str(turn["content"])
        response = None
        for response in bot.stream(message, [tuple(p) for p in pairs]):
            yield response.answer
        sources = format_sources(response)
        yield response.answer + (f"\n\n{sources}" if sources else "")

    with gr.Blocks(title="Regulated assistant") as demo:
        gr.Markdown("## Customer-service assistant\nAnswers come from the institution's documents, with citations.")
        domain = gr.Dropdown(domains, value=domains[0] if domains else None, label="Domain")
        gr.ChatInterface(
            respond,
            additional_inputs=[domain],
            examples=[[q, d] for d in domains for q in load_pack(d).examples[:3]],
            cache_examples=False,
        )
    return demo
