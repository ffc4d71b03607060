"""The browser chat: a Gradio Blocks app over the same Assistant the CLI uses.

Each browser session keeps its own conversation (session id, turns, audit ids) in `gr.State`; the
models load once per process and are shared by every session and both domains. Streaming answers,
sources with scores, an intent + confidence badge, a "Talk to a person" button, thumbs up/down with
an optional comment (stored in the audit log next to the answer), settings, example questions, and
document upload into the current domain's index.

Uploads (index/uploads.py) are parsed in a child process within IngestLimits, recorded with the login
name and session in the index and the audit log, and private to the uploading session until an
administrator (`--admin NAME`) approves them in the "Uploads awaiting approval" panel or with
`python -m index approve`; `--shared-uploads` shares them at once instead.

    python -m ui [--host 127.0.0.1] [--port 7860] [--users FILE] [--admin NAME] [--no-upload] [--no-feedback]
"""

from __future__ import annotations

import html
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import gradio as gr
import tqdm

from assistant.config import AssistantConfig
from assistant.packs import available_packs, load_pack
from assistant.pipeline import Assistant, Response
from index.errors import UserError
from index.uploads import (
    Uploader,
    UploadReport,
    UploadSettings,
    approve_uploads,
    list_uploads,
    reject_uploads,
)

log = logging.getLogger("ui")
# Gradio replaces tqdm's methods when the app starts (to mirror progress bars in the browser). A bar that
# was created before that, by work already running in a background thread (the evidence warm-up, another
# pack's build, a library's hidden bar), lacks the attribute the replacements read, so closing it raised
# AttributeError and stopped that work. The class-level default makes such bars close normally.
tqdm.tqdm._progress = None

NO_ADAPTER = "none (base model)"
ACCEPTED_FILES = [".txt", ".md", ".html", ".htm", ".pdf", ".docx", ".csv", ".xlsx", ".jsonl"]


@dataclass
class UIConfig:
    """What the app offers; `python -m ui` sets these from flags and environment variables."""

    upload: bool = True  # document upload into the current domain's index
    feedback: bool = True  # thumbs up/down and comments
    concurrency: int = 4  # requests the queue works on at once (answers still generate one at a time)
    max_queue: int = 64  # requests waiting beyond that are refused with "too busy"
    adapters: list[str] = field(default_factory=list)  # fine-tuned adapter directories offered in settings
    uploads: UploadSettings = field(default_factory=UploadSettings)  # private until approved, limits, isolation
    admins: list[str] = field(default_factory=list)  # login names that may approve or reject uploads here
    logout: bool = False  # a "Log out" button (Gradio's /logout, which ends the login session); with logins

    @property
    def max_file_mb(self) -> int:
        return int(self.uploads.limits.max_file_bytes // 2**20)


class AssistantPool:
    """One Assistant per (domain, adapter), created on first use and shared by all sessions.

    The embedder is shared by all; the LLM is shared by every domain using the same adapter. Building one
    (its index and intent model on a first start: about a minute) holds up only the chats that need it.
    """

    def __init__(self, base: AssistantConfig | None = None):
        self.base = base or AssistantConfig()
        self._bots: dict[tuple[str, str | None], Assistant] = {}
        self._building: dict[tuple[str, str | None], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, domain: str, adapter: str | None = None) -> Assistant:
        adapter = adapter or self.base.adapter
        key = (domain, adapter)
        with self._lock:
            if key in self._bots:
                return self._bots[key]
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one build per key; chats on other packs go on meanwhile
            with self._lock:
                if key in self._bots:
                    return self._bots[key]
                same_model = next((b for (_, a), b in self._bots.items() if a == adapter), None)
                any_bot = next(iter(self._bots.values()), None)
            bot = Assistant(
                # --grounding was fitted to the base setup; another adapter brings its own grounding.json
                replace(self.base, domain=domain, adapter=adapter,
                        grounding=self.base.grounding if adapter == self.base.adapter else None),
                generator=same_model.generator if same_model else None,
                embedder=any_bot.embedder if any_bot else None)
            with self._lock:
                self._bots[key] = bot
            return bot

    def warm(self, domains: list[str]) -> threading.Thread:
        """Build these packs' assistants in a background thread, one after another, so that the first
        question on each is fast; a pack that fails is logged and built again at its first question."""
        def run() -> None:
            for domain in domains:
                try:
                    self.get(domain)
                except Exception:  # noqa: BLE001 - no caller to raise to: the log has the traceback
                    log.exception("warming up the %s pack failed; it is built at its first question", domain)

        thread = threading.Thread(target=run, daemon=True, name="pack-warm-up")
        thread.start()
        return thread


def find_adapters(data_dir: Path, extra: list[str] | None = None) -> list[str]:
    """Adapter directories to offer: those given, plus every PEFT adapter under DATA_DIR/adapters."""
    found = [str(Path(a)) for a in extra or []]
    root = Path(data_dir) / "adapters"
    if root.is_dir():
        found += [str(p.parent) for p in sorted(root.glob("*/adapter_config.json"))]
    return list(dict.fromkeys(found))


# ------------------------------------------------------------------------------------------ rendering

def _level(confidence: float | None, bot: Assistant | None = None) -> str:
    """The badge's colour, by the thresholds of the weights the assistant runs with (none: neutral)."""
    return "neutral" if bot is None else bot.confidence_level(confidence)


def render_details(response: Response | None, note: str = "", bot: Assistant | None = None) -> str:
    """The panel beside the chat: intent and confidence badges, ticket, sources with scores."""
    if response is None:
        return f"<div class='ra-details ra-empty'>{html.escape(note or 'Ask a question to see its sources.')}</div>"
    badges = []
    if response.action == "emergency":
        badges.append("<span class='ra-badge ra-emergency'>EMERGENCY</span>")
    if response.intent and response.intent.startswith("_"):  # a fixed-reply rule ("_bot_disclosure"), not the classifier
        rule = response.intent.strip("_").replace("_", " ")
        badges.append(f"<span class='ra-badge ra-intent'>rule: {html.escape(rule)}</span>")
    elif response.intent:
        conf = "" if response.intent_confidence is None else f" · {response.intent_confidence:.0%}"
        badges.append(f"<span class='ra-badge ra-intent'>intent: {html.escape(response.intent)}{conf}</span>")
    if response.action:
        badges.append(f"<span class='ra-badge ra-action'>{html.escape(response.action)}</span>")
    if response.confidence is not None:
        badges.append(f"<span class='ra-badge ra-conf ra-{_level(response.confidence, bot)}'>"
                      f"confidence {response.confidence:.0%}</span>")
    if response.caveat:
        badges.append("<span class='ra-badge ra-medium'>shown with a caveat</span>")
    if response.refused and response.action == "answer":
        badges.append("<span class='ra-badge ra-low'>not answered: documents do not support it</span>")
    parts = [f"<div class='ra-badges'>{''.join(badges)}</div>"]
    if response.corrections:
        read = ", ".join(f"<i>{html.escape(a)}</i> → {html.escape(b)}" for a, b in response.corrections.items())
        parts.append(f"<div class='ra-read-as'>Read as: {read}</div>")
    if response.ticket:
        parts.append(f"<div class='ra-ticket'>Ticket <b>{html.escape(response.ticket)}</b></div>")
    if response.sentences:
        rows = []
        for sentence in response.sentences:
            status = sentence["status"]
            reason = f" <span class='ra-reason'>({html.escape(sentence['reason'])})</span>" if sentence["reason"] else ""
            cites = "".join(f"[{n}]" for n in sentence["cites"])
            rows.append(f"<li class='ra-sentence ra-{status}'><span class='ra-status'>{status}</span> "
                        f"{html.escape(sentence['text'])} {cites}{reason}</li>")
        parts.append(f"<div class='ra-sources-title'>Evidence and checks</div><ul class='ra-evidence'>{''.join(rows)}</ul>")
    if response.sources:
        items = []
        for s in response.sources:
            where = html.escape(s.source) + (f", page {s.page}" if s.page else "")
            section = f"<div class='ra-section'>{html.escape(s.section)}</div>" if s.section else ""
            snippet = html.escape(" ".join(s.text.split())[:260])
            cited = "<span class='ra-cited'>cited</span>" if s.cited else ""
            items.append(
                f"<li class='ra-source'><div class='ra-source-head'><b>[{s.n}] {html.escape(s.title)}</b> {cited}"
                f"<span class='ra-score'>score {s.score:.2f}</span></div><div class='ra-where'>{where}</div>"
                f"{section}<div class='ra-snippet'>{snippet}…</div></li>")
        parts.append(f"<div class='ra-sources-title'>Sources</div><ol class='ra-sources'>{''.join(items)}</ol>")
    if response.latency_ms.get("total"):
        parts.append(f"<div class='ra-latency'>{response.latency_ms['total'] / 1000:.1f} s</div>")
    if note:
        parts.append(f"<div class='ra-note'>{html.escape(note)}</div>")
    return f"<div class='ra-details'>{''.join(parts)}</div>"


def chat_text(response: Response) -> str:
    """The bot message as shown in the chat; emergencies get a banner that cannot be missed."""
    if response.action == "emergency":
        return f"🚨 **EMERGENCY**\n\n{response.answer}"
    return response.answer


def upload_documents(bot: Assistant, paths: list[str | Path], uploader: Uploader,
                     settings: UploadSettings) -> UploadReport:
    """Add files to the bot's index for `uploader` (index/uploads.py); the bot audits each one."""
    return bot.add_documents(paths, uploader=uploader, settings=settings)


def review_uploads(bot: Assistant, ids: list[str], admin: str, approve: bool, settings: UploadSettings) -> str:
    """Approve private uploads into the shared index, or reject them; audited with the administrator's name."""
    if approve:
        records = approve_uploads(bot.config.index_dir, ids, bot.embedder, by=admin, settings=settings)
    else:
        records = reject_uploads(bot.config.index_dir, ids, bot.embedder)
    done = "approved" if approve else "rejected"
    for r in records:
        bot.audit.event(f"upload_{done}", user=admin, session_id=r.session, domain=bot.pack.name,
                        detail={"id": r.id, "source": r.source, "uploaded_by": r.user,
                                "uploaded_at": r.uploaded_at, "sha256": r.sha256})
    bot.searcher.refresh()
    return f"{done.capitalize()}: " + ", ".join(f"`{r.source}`" for r in records)


def pending_choices(bot: Assistant) -> list[tuple[str, str]]:
    """(label, id) of every upload waiting for approval in the bot's index, oldest first."""
    out = []
    for r in list_uploads(bot.config.index_dir):
        if r.status == "private":
            who = r.user or f"session {(r.session or '')[:8]}"
            out.append((f"{r.source} · {who} · {time.strftime('%Y-%m-%d %H:%M', time.localtime(r.uploaded_at))}",
                        r.id))
    return out


def upload_summary(report: UploadReport) -> str:
    lines = []
    if report.added and getattr(report, "private", False):
        lines.append(f"**Added {len(report.added)} document(s) for this session only** ({report.seconds:.1f} s): "
                     + ", ".join(f"`{n}`" for n in report.added)
                     + ". Other users will find them once an administrator approves them.")
    elif report.added:
        lines.append(f"**Added {len(report.added)} document(s)** ({report.chunks} passages in the index now, "
                     f"{report.seconds:.1f} s): " + ", ".join(f"`{n}`" for n in report.added))
    if report.rejected:
        lines.append("**Not added** (the index is unchanged for these):")
        lines += [f"- `{name}`: {reason}" for name, reason in report.rejected]
    return "\n".join(lines) or "No files given."


CSS = """
.ra-details {font-size: 0.92em;}
.ra-badges {display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 8px;}
.ra-badge {border-radius: 999px; padding: 2px 10px; font-weight: 600; background: #eef2f7; color: #1f2937;}
.ra-intent {background: #e0e7ff; color: #3730a3;} .ra-action {background: #f3f4f6;}
.ra-high {background: #dcfce7; color: #166534;} .ra-medium {background: #fef3c7; color: #92400e;}
.ra-low {background: #fee2e2; color: #991b1b;}
.ra-emergency {background: #dc2626; color: white; font-size: 1.1em;}
.ra-ticket {margin: 6px 0; padding: 6px 10px; border-left: 4px solid #2563eb; background: #eff6ff;}
.ra-sources {padding-left: 0; list-style: none;}
.ra-evidence {padding-left: 0; list-style: none;} .ra-sentence {margin: 4px 0; font-size: 0.9em;}
.ra-status {font-size: 0.75em; font-weight: 700; padding: 1px 6px; border-radius: 8px; background: #e5e7eb;}
.ra-verified .ra-status, .ra-restated .ra-status {background: #dcfce7;} .ra-quoted .ra-status {background: #dbeafe;}
.ra-removed {color: #9ca3af; text-decoration: line-through;} .ra-reason {text-decoration: none; font-style: italic;}
.ra-source {border: 1px solid #e5e7eb; border-radius: 8px; padding: 8px; margin-bottom: 8px;}
.ra-source-head {display: flex; gap: 8px; align-items: baseline;}
.ra-score {margin-left: auto; color: #6b7280; font-variant-numeric: tabular-nums;}
.ra-cited {background: #dcfce7; color: #166534; border-radius: 4px; padding: 0 6px; font-size: 0.85em;}
.ra-where, .ra-section {color: #6b7280; font-size: 0.9em;} .ra-snippet {margin-top: 4px;}
.ra-sources-title {font-weight: 700; margin-top: 8px;} .ra-latency, .ra-note {color: #6b7280; margin-top: 6px;}
.ra-read-as {color: #6b7280; margin: 6px 0;}
"""


# ---------------------------------------------------------------------------------------------- app

def new_session() -> dict:
    """A browser session's own state: its id, the (user, answer) turns, and each answer's audit id."""
    return {"session_id": uuid.uuid4().hex[:16], "turns": [], "turn_ids": {}, "last_rated": None}


def build_demo(pool: AssistantPool | None = None, ui: UIConfig | None = None) -> gr.Blocks:
    pool = pool or AssistantPool()
    ui = ui or UIConfig()
    domains = available_packs()
    if not domains:
        raise RuntimeError("no domain packs found: the assistant/packs folder is missing or empty")
    default = pool.base.domain if pool.base.domain in domains else domains[0]
    examples = {d: load_pack(d).examples for d in domains}
    adapters = [NO_ADAPTER, *ui.adapters]

    def adapter_value(choice: str | None) -> str | None:
        return None if not choice or choice == NO_ADAPTER else choice

    def respond(message: str, chat: list, domain: str, top_k: int, temperature: float, max_new_tokens: int,
                adapter: str, state: dict, request: gr.Request) -> Iterator[tuple]:
        state = state or new_session()
        message = (message or "").strip()
        chat = list(chat or [])
        if not message:
            yield chat, gr.skip(), "", state
            return
        if not chat:  # an empty chat is a new conversation, whatever an API caller's session held before
            state = dict(state, turns=[], turn_ids={})
        bot = pool.get(domain, adapter_value(adapter))
        bot.searcher.refresh()  # uploads and approvals made elsewhere (another tab, `python -m index approve`)
        chat = chat + [{"role": "user", "content": message}, {"role": "assistant", "content": "…"}]
        yield chat, render_details(None, "Thinking…"), "", state
        response = None
        try:
            for response in bot.stream(message, list(state["turns"]), session_id=state["session_id"],
                                       user=getattr(request, "username", None), top_k=int(top_k),
                                       temperature=float(temperature), max_new_tokens=int(max_new_tokens)):
                chat[-1] = {"role": "assistant", "content": chat_text(response)}
                yield chat, gr.skip(), "", state
        except Exception as exc:  # a bug or a failed back end: logged in full, the customer gets an apology
            turn = getattr(exc, "turn_id", None)
            log.exception("answering failed (audit turn %s)", turn)
            apology = ("Sorry, something went wrong on our side and I could not finish this answer. "
                       "Please try again, or ask for a person." + (f" (Reference: {turn})" if turn else ""))
            chat[-1] = {"role": "assistant", "content": apology}
            yield chat, render_details(None, apology), "", state
            return
        state = dict(state, turns=[*state["turns"], (message, response.answer)],
                     turn_ids={**state["turn_ids"], str(len(chat) - 1): response.turn_id})
        yield chat, render_details(response, bot=bot), "", state

    def talk_to_person(chat: list, domain: str, adapter: str, state: dict, request: gr.Request) -> tuple:
        state = state or new_session()
        response = pool.get(domain, adapter_value(adapter)).handoff(list(state["turns"]), state["session_id"],
                                                                    user=getattr(request, "username", None))
        chat = list(chat or []) + [{"role": "assistant", "content": response.answer}]
        state = dict(state, turns=[*state["turns"], ("[talk to a person]", response.answer)],
                     turn_ids={**state["turn_ids"], str(len(chat) - 1): response.turn_id})
        return chat, render_details(response, bot=pool.get(domain, adapter_value(adapter))), state

    def on_feedback(state: dict, comment: str, domain: str, data: gr.LikeData) -> str:
        index = data.index[0] if isinstance(data.index, list | tuple) else data.index
        turn_id = (state or {}).get("turn_ids", {}).get(str(index))
        if not turn_id:
            return "Feedback is for the assistant's answers."
        rating = 1 if data.liked is True or data.liked == "Like" else -1
        pool.get(domain).feedback(turn_id, rating, (comment or "").strip() or None)
        return f"Thank you: your {'👍' if rating > 0 else '👎'} was saved with answer {turn_id}."

    def reset(domain: str) -> tuple:
        return [], render_details(None), "", new_session(), gr.Dataset(samples=[[q] for q in examples[domain]])

    def upload(files: list | None, domain: str, adapter: str, state: dict, request: gr.Request,
               progress=gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008  (how Gradio injects progress)
        if not files:
            return "Choose one or more files first.", None
        paths = [f if isinstance(f, str) else f.name for f in files]
        progress(0, desc="reading and indexing")
        uploader = Uploader(user=getattr(request, "username", None), session=(state or {}).get("session_id"))
        try:
            report = upload_documents(pool.get(domain, adapter_value(adapter)), paths, uploader, ui.uploads)
        except UserError as exc:  # the index keeps its previous version: nothing is lost
            return f"**Upload failed**, the index is unchanged: {exc}", None
        except Exception:  # a bug: logged in full; the index keeps its previous version
            log.exception("upload failed (%s)", ", ".join(Path(p).name for p in paths))
            return ("**Upload failed** because of an error on our side; the index is unchanged. "
                    "It has been logged for the administrators."), None
        return upload_summary(report), None

    def admin_name(request: gr.Request | None) -> str | None:
        name = getattr(request, "username", None)
        return name if name and name in ui.admins else None

    def show_review(domain: str, request: gr.Request) -> tuple:
        if not admin_name(request):
            return gr.update(visible=False), gr.update(choices=[], value=[])
        return gr.update(visible=True), gr.update(choices=pending_choices(pool.get(domain)), value=[])

    def review(ids: list[str] | None, domain: str, approve: bool, request: gr.Request) -> tuple:
        admin = admin_name(request)
        if not admin:
            return "Only an administrator can approve or reject uploads.", gr.update()
        bot = pool.get(domain)
        if not ids:
            return "Choose one or more uploads first.", gr.update(choices=pending_choices(bot), value=[])
        try:
            note = review_uploads(bot, list(ids), admin, approve, ui.uploads)
        except UserError as exc:  # the index keeps its previous version
            note = f"**Not done**, the index is unchanged: {exc}"
        except Exception:  # a bug: logged in full; the index keeps its previous version
            log.exception("review of uploads %s failed", ", ".join(ids))
            note = "**Not done** because of an error on our side; the index is unchanged. It has been logged."
        return note, gr.update(choices=pending_choices(bot), value=[])

    def approve_selected(ids: list[str] | None, domain: str, request: gr.Request) -> tuple:
        return review(ids, domain, True, request)

    def reject_selected(ids: list[str] | None, domain: str, request: gr.Request) -> tuple:
        return review(ids, domain, False, request)

    with gr.Blocks(title="Regulated assistant") as demo:
        state = gr.State(new_session)
        with gr.Row():
            gr.Markdown("## Customer-service assistant\nAnswers come only from the institution's documents, "
                        "with sources. Personal data is redacted from every log.")
            domain = gr.Dropdown(domains, value=default, label="Domain", scale=0, min_width=180,
                                 elem_id="domain")
            if ui.logout:
                gr.Button("Log out", link="/logout", link_target="_self", size="sm", scale=0, min_width=90,
                          elem_id="logout")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(height=480, label="Conversation", elem_id="chat",
                                     feedback_options=("Like", "Dislike") if ui.feedback else None,
                                     buttons=["copy"])
                with gr.Row():
                    msg = gr.Textbox(placeholder="Type your question and press Enter", show_label=False,
                                     scale=5, elem_id="message", autofocus=True,
                                     max_length=AssistantConfig.max_message_chars)
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                with gr.Row():
                    person = gr.Button("Talk to a person", elem_id="handoff")
                    clear = gr.Button("New conversation", elem_id="new-conversation")
                example_set = gr.Dataset(components=[msg], samples=[[q] for q in examples[default]],
                                         label="Example questions", type="values", elem_id="examples")
                if ui.feedback:
                    comment = gr.Textbox(label="Optional comment for your 👍 / 👎", lines=1, max_length=1000,
                                         elem_id="feedback-comment")
                    feedback_note = gr.Markdown(elem_id="feedback-status")
            with gr.Column(scale=2):
                details = gr.HTML(render_details(None), elem_id="details")
                with gr.Accordion("Settings", open=False):
                    top_k = gr.Slider(1, 5, value=pool.base.top_k, step=1, label="Passages (top-k)")
                    temperature = gr.Slider(0.0, 1.0, value=pool.base.temperature, step=0.1,
                                            label="Temperature (0 = reproducible)")
                    max_tokens = gr.Slider(32, 512, value=pool.base.max_new_tokens, step=16,
                                           label="Max new tokens")
                    adapter = gr.Dropdown(adapters, value=adapters[0], label="Fine-tuned adapter",
                                          interactive=len(adapters) > 1)
                if ui.upload:
                    with gr.Accordion("Add documents to this domain", open=False, elem_id="upload-panel"):
                        files = gr.File(file_count="multiple", file_types=ACCEPTED_FILES, label="Documents",
                                        elem_id="upload-files")
                        add = gr.Button("Add to index", elem_id="upload-button")
                        upload_status = gr.Markdown(elem_id="upload-status")
                if ui.upload and ui.admins:
                    with gr.Accordion("Uploads awaiting approval", open=False, visible=False,
                                      elem_id="approval-panel") as review_panel:
                        pending = gr.Dropdown([], multiselect=True, label="Private uploads", elem_id="pending")
                        with gr.Row():
                            approve = gr.Button("Approve into the shared index", variant="primary",
                                                elem_id="approve-button")
                            reject = gr.Button("Reject", elem_id="reject-button")
                        review_status = gr.Markdown(elem_id="review-status")

        inputs = [msg, chatbot, domain, top_k, temperature, max_tokens, adapter, state]
        outputs = [chatbot, details, msg, state]
        msg.submit(respond, inputs, outputs, api_name="chat")
        send.click(respond, inputs, outputs, api_name=False)
        person.click(talk_to_person, [chatbot, domain, adapter, state], [chatbot, details, state],
                     api_name="handoff")
        chatbot.clear(lambda: (render_details(None), new_session()), None, [details, state], api_name=False)
        clear.click(reset, [domain], [chatbot, details, msg, state, example_set], api_name=False)
        domain.change(reset, [domain], [chatbot, details, msg, state, example_set], api_name=False)
        example_set.click(lambda sample: sample[0], [example_set], [msg], api_name=False)
        if ui.feedback:
            chatbot.like(on_feedback, [state, comment, domain], [feedback_note], api_name=False)
        if ui.upload:
            add.click(upload, [files, domain, adapter, state], [upload_status, files], api_name="upload",
                      concurrency_limit=1)
        if ui.upload and ui.admins:
            demo.load(show_review, [domain], [review_panel, pending], api_name=False)
            domain.change(show_review, [domain], [review_panel, pending], api_name=False)
            approve.click(approve_selected, [pending, domain], [review_status, pending], api_name=False,
                          concurrency_limit=1)
            reject.click(reject_selected, [pending, domain], [review_status, pending], api_name=False,
                         concurrency_limit=1)
    demo.queue(default_concurrency_limit=ui.concurrency, max_size=ui.max_queue)
    return demo
