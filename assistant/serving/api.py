"""The assistant as an OpenAI-compatible HTTP API (FastAPI), started by `python -m assistant serve`.

    curl -s http://127.0.0.1:8000/v1/chat/completions -H "Authorization: Bearer $TOKEN" \
      -H "Content-Type: application/json" \
      -d '{"model": "bank", "messages": [{"role": "user", "content": "How much is an international wire?"}]}'

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=TOKEN)
    reply = client.chat.completions.create(model="bank", messages=messages, extra_body={"session_id": "c-42"})
    reply.choices[0].message.content, reply.assistant["sources"], reply.assistant["turn_id"]

Routes (every /v1 route wants `Authorization: Bearer TOKEN`, a token from the server's tokens file):

    POST /v1/chat/completions  `model` names a pack (GET /v1/models lists them); `messages` is the
                               conversation, its last message the user's; `stream` for server-sent events
    GET  /v1/models            the packs served here
    POST /v1/feedback          {"turn_id", "rating": 1 | -1, "comment"}: stored beside that answer
    POST /v1/handoff           {"session_id", "model", "reason", "messages"}: a ticket for a person
    GET  /healthz              the process is up (no token)
    GET  /readyz               the models are loaded and every index is readable; 503 until then (no token)

What OpenAI's format has no field for travels in a top-level "assistant" object, which OpenAI clients
keep (`reply.assistant` in the `openai` package): turn_id (for feedback), session_id, intent, action,
confidence, ticket, refused, caveat, query (what was searched), corrections (misspelled words and what
they were read as), sources, evidence, sentences and latency_ms. A request may carry
`session_id` (the conversation's id in the audit log; a new one is made and returned when absent).

How answers are written is the operator's choice (`serve --answer-mode ...`). A client's system
message, temperature, max_tokens, top_p and stop are accepted and not used, so every client gets the
checked answer the audit log records. `usage` counts the LLM's tokens: 0 for quoted and scripted replies.
A message over the pack's length limit is answered with the limit, as in the UI; a request body over
--max-request-kb gets 413. Each answer is audited under the token's name (the audit log's `user`).

Streaming sends only checked text as content: a first chunk whose "assistant" object carries the quoted
evidence as soon as it is found, the answer, then a chunk with finish_reason "stop" and the whole
"assistant" object. Comments (": keep-alive") keep an idle connection open while the answer is written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant.config import AssistantConfig
from assistant.llm.generate import GenerationError
from assistant.packs import load_pack
from assistant.pipeline import Assistant, Response
from assistant.serving.serve import ApiTokens, ServeConfig

log = logging.getLogger("assistant.serving.api")

HISTORY_TURNS = 20  # earlier turns of a long conversation are dropped (the pipeline reads only the last few)
KEEPALIVE_S = 10.0
SESSION_ID = r"^[A-Za-z0-9._:@-]{1,128}$"
ASSISTANT_FIELDS = ("turn_id", "intent", "intent_confidence", "action", "confidence", "ticket", "refused",
                    "caveat", "grounded", "answer_mode", "offer", "support", "query", "corrections", "sources",
                    "evidence", "sentences", "latency_ms")


class APIError(Exception):
    """A failure answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


# ------------------------------------------------------------------------------------- request shapes

class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, ...

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens, top_p, stop, user, ...: not used

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1
    session_id: str | None = Field(default=None, pattern=SESSION_ID)


class FeedbackRequest(BaseModel):
    turn_id: str = Field(min_length=1, max_length=64)
    rating: Literal[1, -1]  # +1 helpful, -1 not helpful
    comment: str | None = Field(default=None, max_length=1000)


class HandoffRequest(BaseModel):
    session_id: str = Field(pattern=SESSION_ID)
    model: str | None = None  # the pack whose team takes the ticket (default: the first served)
    reason: str | None = Field(default=None, max_length=500)
    messages: list[Message] = Field(default_factory=list)  # the conversation so far, for the ticket's summary


def text_of(message: Message) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    parts = []
    for part in message.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, f"only text content is supported (a message has a '{part.get('type')}' part)",
                           param="messages")
        parts.append(part["text"])
    return "\n".join(parts)


def history_of(messages: list[Message]) -> list[tuple[str, str]]:
    """OpenAI messages as the pipeline's (user, assistant) turns; system, developer and tool messages are
    not part of the customer's conversation and are left out."""
    history: list[tuple[str, str]] = []
    asked: str | None = None
    for m in messages:
        if m.role == "user":
            if asked is not None:
                history.append((asked, ""))
            asked = text_of(m)
        elif m.role == "assistant":
            history.append((asked or "", text_of(m)))
            asked = None
    if asked is not None:
        history.append((asked, ""))
    return history[-HISTORY_TURNS:]


def conversation(messages: list[Message]) -> tuple[str, list[tuple[str, str]]]:
    """(the question, the turns before it) from a chat request's messages. A question over the pack's length
    limit is answered by the pipeline itself, with the limit, and audited like any turn."""
    spoken = [m for m in messages if m.role in ("user", "assistant")]
    if not spoken or spoken[-1].role != "user":
        raise APIError(400, "the last user or assistant message must be the user's question", param="messages")
    question = text_of(spoken[-1]).strip()
    if not question:
        raise APIError(400, "the user's message is empty: ask a question", param="messages")
    return question, history_of(spoken[:-1])


# ------------------------------------------------------------------------------------------- packs

class Packs:
    """The packs served: one Assistant each, loaded in the background so /healthz answers at once."""

    def __init__(self, base: AssistantConfig, specs: list[str]):
        self.base = base
        self.specs = list(specs)
        self.info = {spec: load_pack(spec) for spec in self.specs}  # a bad pack fails before serving
        self.names = {spec: pack.name for spec, pack in self.info.items()}
        self.bots: dict[str, Assistant] = {}  # pack name -> Assistant, filled while loading
        self.error: str | None = None
        self.ready = threading.Event()

    def load(self) -> None:
        started = time.perf_counter()
        generator = embedder = None
        try:
            for spec in self.specs:
                bot = Assistant(replace(self.base, domain=spec), generator=generator, embedder=embedder)
                if self.base.answer_mode != "quote":
                    generator = bot.generator  # the LLM loads now, not at the first question
                embedder = bot.embedder
                self.bots[self.names[spec]] = bot
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and every request, and logged here
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("loading the packs failed")
            print(f"worker {os.getpid()}: cannot load the packs: {self.error}", file=sys.stderr, flush=True)
            return
        self.ready.set()
        print(f"worker {os.getpid()}: ready with {', '.join(self.bots)} ({time.perf_counter() - started:.1f} s)",
              file=sys.stderr, flush=True)

    def resolve(self, model: str | None) -> str:
        """The pack name a request's `model` means: a pack name, or the spec the server was started with."""
        if model is None:
            return self.names[self.specs[0]]
        if model in self.names.values():
            return model
        if model in self.names:
            return self.names[model]
        raise APIError(404, f"model '{model}' is not served here: use one of {', '.join(self.names.values())} "
                       "(GET /v1/models)", code="model_not_found", param="model")

    def bot(self, model: str | None) -> tuple[str, Assistant]:
        name = self.resolve(model)
        bot = self.bots.get(name)
        if bot is None:
            if self.error:
                raise APIError(503, f"this server could not load its packs: {self.error}", code="not_ready")
            raise APIError(503, "the assistant is still loading its models; /readyz says when it is ready",
                           code="loading", headers={"Retry-After": "5"})
        return name, bot

    def check_indexes(self) -> dict[str, dict]:
        """Follow each index to its live version and read a chunk from it (raises when it cannot)."""
        out = {}
        for name, bot in self.bots.items():
            store = bot.searcher.refresh()
            if len(store):
                store.chunks([0])
            out[name] = {"chunks": len(store), "index_version": store.version}
        return out


# ------------------------------------------------------------------------------------------ answers

class Service:
    """What the routes share: packs, tokens, the answer threads and how many requests they hold."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.tokens = ApiTokens.load(config.tokens_file)
        self.packs = Packs(config.assistant, config.domains)
        self.executor = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="answer")
        self.started = time.time()
        self._pending = 0
        self._lock = threading.Lock()

    def admit(self) -> None:
        with self._lock:
            if self._pending >= self.config.max_pending:
                raise APIError(503, f"the assistant is busy ({self._pending} requests in this process); retry "
                               "shortly", code="overloaded", headers={"Retry-After": "2"})
            self._pending += 1

    def release(self) -> None:
        with self._lock:
            self._pending -= 1

    def answer(self, bot: Assistant, message: str, history: list[tuple[str, str]], session_id: str, user: str,
               put: Callable[[tuple[str, Any]], None]) -> None:
        try:
            produce(bot, message, history, session_id, user, put)
        finally:
            self.release()

    def start(self, bot: Assistant, message: str, history: list[tuple[str, str]], session_id: str,
              user: str) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def put(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop has closed (shutdown): nobody is left to read this
                log.info("answer finished after the server stopped listening")

        self.admit()
        try:
            self.executor.submit(self.answer, bot, message, history, session_id, user, put)
        except RuntimeError:  # the executor is shutting down
            self.release()
            raise APIError(503, "the server is shutting down", code="shutting_down") from None
        return queue


def produce(bot: Assistant, message: str, history: list[tuple[str, str]], session_id: str, user: str,
            put: Callable[[tuple[str, Any]], None]) -> None:
    """One turn, in an answer thread: ("partial", Response) as soon as the quoted evidence is found, while
    the answer is still being written, then ("done", the final Response), or ("error", the exception).
    It runs to the end even when the client has gone, so that every answer given is in the audit log."""
    try:
        final = None
        for response in bot.stream(message, history, session_id=session_id, user=user):
            final = response
            if not response.done:
                put(("partial", response))
        put(("done", final))
    except Exception as exc:  # noqa: BLE001 - handed to the request, which answers it (and logs ours)
        if not isinstance(exc, GenerationError):
            log.exception("answering failed")
        put(("error", exc))


def failure(exc: Exception) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, GenerationError):
        return APIError(502, f"the answer could not be written: {exc}", code="generation_failed")
    turn = getattr(exc, "turn_id", None)  # the audit row of the failed turn, for support to find it
    return APIError(500, "Sorry, the assistant failed on this request; the server log has the details"
                    + (f" (reference: audit turn {turn})" if turn else ""), code="internal_error")


def assistant_fields(response: Response, session_id: str, model: str) -> dict:
    data = response.to_dict()
    return {**{k: data[k] for k in ASSISTANT_FIELDS}, "session_id": session_id, "domain": model,
            "llm": response.model}


def usage(response: Response) -> dict:
    prompt = int(response.stats.get("prompt_tokens", 0))
    completion = int(response.stats.get("new_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


async def completion_events(queue: asyncio.Queue, first: tuple[str, Any], head: dict, session_id: str,
                            include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format (see the module docstring for their order)."""

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        return sse({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                    **extra})

    kind, response = first
    opening: dict = {"session_id": session_id, "turn_id": response.turn_id}
    if kind == "partial" and response.evidence:
        opening.update(stage="evidence", evidence=response.evidence,
                       sources=response.to_dict()["sources"])
    yield chunk({"role": "assistant", "content": ""}, assistant=opening)
    while kind == "partial":  # text the checks may still change is not sent (generative mode's raw tokens)
        try:
            kind, response = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
        except TimeoutError:
            yield ": keep-alive\n\n"
    if kind == "error":
        yield sse(failure(response).body())
        yield sse("[DONE]")
        return
    yield chunk({"content": response.answer})
    yield chunk({}, "stop", assistant=assistant_fields(response, session_id, head["model"]))
    if include_usage:
        yield sse({**head, "choices": [], "usage": usage(response)})
    yield sse("[DONE]")


# --------------------------------------------------------------------------------------------- app

class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413, whether or not they declare their length."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await self._too_large(scope, receive, send)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # later reads wait for the disconnect, as a streaming response expects

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        error = APIError(413, f"the request is larger than this server takes ({self.max_bytes // 1024} KiB)",
                         code="request_too_large")
        await error.response()(scope, receive, send)


def create_app(config: ServeConfig) -> FastAPI:
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=service.packs.load, name="load-packs", daemon=True).start()
        yield
        service.executor.shutdown(wait=True)  # answers still running finish, and are audited

    app = FastAPI(title="Regulated assistant API", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)  # no unauthenticated pages beside the probes
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=config.max_request_bytes)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if not where:  # not a JSON object at all (a form post, a list, bad JSON)
            message = "the request body must be a JSON object sent with Content-Type: application/json"
        else:
            message = f"{where}: {first.get('msg', 'invalid value')}"
        return APIError(400, message, param=where or None, code="invalid_request").response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return APIError(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)).response()

    def authorised(request: Request) -> str:
        """The audit name of the request's bearer token; 401 without a valid one."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(401, "no bearer token: send 'Authorization: Bearer TOKEN' with a token from the "
                           "server's tokens file", code="missing_api_key", headers=challenge)
        user = service.tokens.user(token.strip())
        if user is None:
            raise APIError(401, "the bearer token is not valid here", code="invalid_api_key", headers=challenge)
        return user

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "worker": os.getpid(), "uptime_s": round(time.time() - service.started, 1)}

    @app.get("/readyz")
    async def readyz():
        packs = service.packs
        worker = os.getpid()
        if packs.error:
            return JSONResponse({"status": "failed", "error": packs.error, "worker": worker}, status_code=503)
        if not packs.ready.is_set():
            return JSONResponse({"status": "loading", "loaded": list(packs.bots), "worker": worker},
                                status_code=503)
        try:
            indexes = await run_in_threadpool(packs.check_indexes)
        except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: faiss and IndexError_
            return JSONResponse({"status": "index unreadable", "error": str(exc), "worker": worker},
                                status_code=503)
        return {"status": "ready", "packs": indexes, "worker": worker}

    @app.get("/v1/models")
    async def models(user: str = Depends(authorised)):
        return {"object": "list", "data": [
            {"id": pack.name, "object": "model", "created": int(service.started), "owned_by": pack.institution,
             "assistant_name": pack.assistant_name, "ready": pack.name in service.packs.bots}
            for pack in service.packs.info.values()]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, user: str = Depends(authorised)):
        name, bot = service.packs.bot(body.model)
        if body.n != 1:
            raise APIError(400, "n must be 1: the assistant gives one checked answer", param="n")
        message, history = conversation(body.messages)
        session_id = body.session_id or f"api-{uuid.uuid4().hex[:16]}"
        queue = service.start(bot, message, history, session_id, user)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": name}
        served = {"X-Worker": str(os.getpid())}  # which process answered: its log has the details
        first = await queue.get()
        if first[0] == "error":
            raise failure(first[1])
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            events = completion_events(queue, first, {**head, "object": "chat.completion.chunk"}, session_id,
                                       include_usage)
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **served})
        kind, response = first
        while kind == "partial":
            kind, response = await queue.get()
        if kind == "error":
            raise failure(response)
        return JSONResponse({**head, "object": "chat.completion",
                             "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                          "message": {"role": "assistant", "content": response.answer,
                                                      "refusal": None}}],
                             "usage": usage(response), "assistant": assistant_fields(response, session_id, name)},
                            headers=served)

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackRequest, user: str = Depends(authorised)):
        _, bot = service.packs.bot(None)  # one audit log for every pack: any of them records it
        try:
            await run_in_threadpool(bot.audit.feedback, body.turn_id, body.rating,
                                    (body.comment or "").strip() or None)
        except ValueError as exc:  # no such turn
            raise APIError(404, str(exc), param="turn_id", code="turn_not_found") from None
        return {"object": "feedback", "turn_id": body.turn_id, "rating": body.rating, "status": "recorded"}

    @app.post("/v1/handoff")
    async def handoff(body: HandoffRequest, user: str = Depends(authorised)):
        name, bot = service.packs.bot(body.model)
        history = history_of(body.messages)
        if body.reason and body.reason.strip():  # the ticket's summary is what the person taking it reads
            history.append((f"[reason for the handoff] {body.reason.strip()}", ""))
        response = await run_in_threadpool(lambda: bot.handoff(history, body.session_id, user=user))
        return {"object": "handoff", "ticket": response.ticket, "turn_id": response.turn_id,
                "session_id": body.session_id, "model": name, "message": response.answer}

    return app
