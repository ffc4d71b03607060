"""The `openai` back end: any OpenAI-compatible chat-completions server (vLLM, TGI, llama.cpp's server,
Ollama, a hosted API), streamed over HTTP.

    python -m assistant ask "..." --backend openai --base-url http://gpu-box:8000/v1 --model MODEL

The key, when the server wants one, comes from $RA_OPENAI_API_KEY or $OPENAI_API_KEY (never from the
command line, where other users of the machine could read it). Connection failures, timeouts and
429/5xx answers are retried with backoff until the first token arrives; after that a failure ends the
answer with an error rather than repeating text.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from assistant.llm.generate import GenerationError, GenerationSettings, GenerationStats, StopTrimmer

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
START_HINT = ("start it (for example `vllm serve MODEL --port 8000`, or "
              "`python -m llama_cpp.server --model FILE.gguf`) or fix --base-url")


def api_key() -> str | None:
    return os.environ.get("RA_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def normalise_url(base_url: str) -> str:
    """`http://host:8000` and `http://host:8000/v1/` both mean `http://host:8000/v1`."""
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise GenerationError(f"--base-url '{base_url}' is not an http(s) URL such as http://localhost:8000/v1")
    return url if parts.path else url + "/v1"


class OpenAIGenerator:
    """Streams chat completions from an OpenAI-compatible server."""

    backend = "openai"

    def __init__(self, base_url: str, model: str | None = None, *, timeout: float = 60.0, retries: int = 2,
                 connect_timeout: float = 5.0, key: str | None = None):
        import httpx

        self.base_url = normalise_url(base_url)
        self.retries = max(0, retries)
        headers = {"Authorization": f"Bearer {key or api_key()}"} if (key or api_key()) else {}
        self.client = httpx.Client(timeout=httpx.Timeout(timeout, connect=connect_timeout), headers=headers)
        self._usage_ok = True  # some servers reject stream_options: then count streamed pieces
        try:
            served = self._models()  # also the reachability check: a dead server fails here, not mid-answer
        except GenerationError as exc:
            if model in (None, "", "bundled") or not any(f"HTTP {c}" in str(exc) for c in (404, 405)):
                raise
            served = []  # a server without /models (some proxies): the named model is used as given
        if model in (None, "", "bundled"):
            if not served:
                raise GenerationError(f"{self.base_url}/models lists no model: pass the served name with --model")
            model = served[0]
        self.model_id = model
        self.served = served

    def _request(self, method: str, path: str, **kwargs):
        """Send with retries; returns an open streaming response with a 2xx status."""
        import httpx

        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
            try:
                response = self.client.send(self.client.build_request(method, url, **kwargs), stream=True)
            except httpx.TimeoutException:
                last = "timed out"
                continue
            except httpx.TransportError as exc:
                last = str(exc) or type(exc).__name__
                continue
            if response.status_code < 300:
                return response
            body = response.read().decode("utf-8", "replace")[:300]
            response.close()
            last = f"HTTP {response.status_code}: {body}"
            if response.status_code in (401, 403):
                raise GenerationError(f"{url} refused the request ({last}): set RA_OPENAI_API_KEY")
            if response.status_code not in RETRY_STATUS:
                raise GenerationError(f"{url} answered {last}")
        raise GenerationError(f"cannot reach the OpenAI-compatible server at {self.base_url} "
                              f"after {self.retries + 1} tries ({last}): {START_HINT}")

    def _models(self) -> list[str]:
        response = self._request("GET", "/models")
        try:
            data = json.loads(response.read())
        except json.JSONDecodeError as exc:
            raise GenerationError(f"{self.base_url}/models did not answer JSON: is this an OpenAI-compatible "
                                  "server? The base URL usually ends in /v1") from exc
        finally:
            response.close()
        return [m.get("id", "") for m in data.get("data", []) if isinstance(m, dict)]

    def stream(self, messages: list[dict], settings: GenerationSettings,
               stats: GenerationStats | None = None) -> Iterator[str]:
        stats = stats if stats is not None else GenerationStats()
        payload: dict = {"model": self.model_id, "messages": messages, "stream": True,
                         "max_tokens": settings.max_new_tokens, "temperature": settings.temperature}
        if settings.temperature > 0:
            payload["top_p"] = settings.top_p
        if settings.stop:
            payload["stop"] = list(settings.stop)[:4]  # OpenAI's limit; all are trimmed below as well
        if settings.repetition_penalty != 1.0:
            payload["repetition_penalty"] = settings.repetition_penalty  # vLLM / TGI extension
        started = time.perf_counter()
        if self._usage_ok:
            payload["stream_options"] = {"include_usage": True}
        try:
            response = self._request("POST", "/chat/completions", json=payload)
        except GenerationError as exc:
            if "stream_options" not in payload or "HTTP 4" not in str(exc):
                raise
            self._usage_ok = False
            del payload["stream_options"]
            response = self._request("POST", "/chat/completions", json=payload)
        trimmer = StopTrimmer(settings.stop)
        pieces, usage = 0, None
        finished = False
        try:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # SSE comments and keep-alives
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError as exc:
                    raise GenerationError(f"{self.base_url} streamed a line that is not JSON: {data[:120]}") from exc
                if "error" in chunk:
                    raise GenerationError(f"{self.base_url} stopped with an error: {chunk['error']}")
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content") or ""
                    if content:
                        pieces += 1
                        piece = trimmer.feed(content)
                        if piece:
                            if not stats.ttft_ms:
                                stats.ttft_ms = (time.perf_counter() - started) * 1000
                            yield piece
                    if choice.get("finish_reason"):
                        stats.finish_reason = choice["finish_reason"]
                if trimmer.stopped:
                    stats.finish_reason = "stop"
                    break
            if tail := trimmer.flush():
                yield tail
            finished = True
        except Exception as exc:
            import httpx

            if isinstance(exc, httpx.HTTPError):
                raise GenerationError(f"the answer from {self.base_url} broke off: {exc}") from exc
            raise
        finally:
            response.close()
            if not finished:
                stats.finish_reason = "cancelled"
            stats.total_ms = (time.perf_counter() - started) * 1000
        stats.new_tokens = int(usage["completion_tokens"]) if usage else pieces
        stats.prompt_tokens = int(usage["prompt_tokens"]) if usage else 0

    def close(self) -> None:
        self.client.close()
