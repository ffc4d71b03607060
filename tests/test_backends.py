"""Generation back ends on the real bundled model: transformers, llama.cpp in process, and an
OpenAI-compatible server (llama.cpp's own server, started on loopback by the tests).

The llama-cpp and openai tests need the optional extra (`pip install -e ".[llamacpp]"`, which
`make test` installs); without it they skip with that instruction.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import pytest

from assistant import Assistant, AssistantConfig
from assistant.llm import llamacpp
from assistant.llm.backends import choose_backend, make_generator
from assistant.llm.generate import (
    GenerationError,
    GenerationSettings,
    GenerationStats,
    Generator,
    StopTrimmer,
)
from assistant.llm.models import ModelSpecError, load_llm
from assistant.tools import free_port
from index.errors import SettingError
from tests.conftest import ROOT, run_cli

needs_llamacpp = pytest.mark.skipif(not llamacpp.available(),
                                    reason='llama-cpp-python is not installed: pip install -e ".[llamacpp]"')
CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
STORY = [{"role": "user", "content": "Write a long story about a small bank in a mountain town."}]
WIRE = "How much does an international wire transfer cost?"



def check_max_tokens_and_stop(gen) -> GenerationStats:
    """What every back end must do: stream in pieces, end at max tokens ("length"), and end before a
    stop string ("stop"). Returns the stopped run's stats."""
    long = GenerationStats()
    pieces = list(gen.stream(STORY, GenerationSettings(max_new_tokens=24), long))
    assert len(pieces) > 5 and long.new_tokens == 24 and long.finish_reason == "length"
    assert long.ttft_ms > 0 and long.tokens_per_s > 0
    text = "".join(pieces)
    cut = text.split()[4]  # a word the greedy answer is known to contain
    stopped = GenerationStats()
    short = "".join(gen.stream(STORY, GenerationSettings(max_new_tokens=24, stop=(cut,)), stopped))
    assert cut not in short and text.startswith(short.rstrip()) and stopped.finish_reason == "stop"
    return stopped


# ------------------------------------------------------------------------------- shared behaviour

def test_stop_trimmer_cuts_across_pieces_and_holds_back_only_a_prefix():
    trim = StopTrimmer(("\nUser:", "###"))
    assert trim.feed("Hello") == "Hello"
    assert trim.feed(" wor#") == " wor"  # '#' might start '###'
    assert trim.feed("ld") == "#ld"  # it did not
    assert trim.feed(" end\nUs") == " end"
    assert trim.feed("er: next") == "" and trim.stopped
    assert trim.feed("more") == "" and trim.flush() == ""
    plain = StopTrimmer(())
    assert plain.feed("a#") == "a#" and plain.flush() == ""


def test_auto_backend_choice():
    assert choose_backend("auto", base_url="http://localhost:8000/v1") == "openai"
    assert choose_backend("auto", device="cpu", adapter="some/adapter") == "transformers"
    assert choose_backend("auto", device="cpu", model="HuggingFaceTB/SmolLM2-135M-Instruct") == "transformers"
    expected = "llama-cpp" if llamacpp.available() else "transformers"
    assert choose_backend("auto", device="cpu") == expected
    assert choose_backend("auto", device="cuda") == "transformers"
    with pytest.raises(ValueError, match="--backend must be one of"):
        choose_backend("vllm")
    with pytest.raises(ValueError, match="--backend must be"):
        AssistantConfig(backend="vllm")


@pytest.fixture(scope="module")
def transformers_gen():
    return Generator(load_llm("bundled", device="cpu"))


def test_transformers_backend_honours_max_tokens_stop_strings_and_cancel(transformers_gen):
    check_max_tokens_and_stop(transformers_gen)
    stream = transformers_gen.stream(STORY, GenerationSettings(max_new_tokens=200))
    next(stream)
    started = time.perf_counter()
    stream.close()  # a closed stream frees the model at once instead of decoding 200 tokens
    assert time.perf_counter() - started < 5
    assert transformers_gen._lock.acquire(timeout=5)
    transformers_gen._lock.release()


def test_transformers_static_cache_paths_give_the_same_answer(transformers_gen):
    """The GPU fast paths run eagerly on CPU and must give the plain path's greedy text: `generate` with
    the static cache, and our own loop (the step compiled into a CUDA graph on a GPU)."""
    settings = GenerationSettings(max_new_tokens=40)
    plain_stats = GenerationStats()
    plain = "".join(transformers_gen.stream(STORY, settings, plain_stats))
    via_generate = Generator(transformers_gen.llm, static_cache=True, graph_decode=False)
    assert "".join(via_generate.stream(STORY, settings)) == plain
    graph = Generator(transformers_gen.llm, static_cache=True, max_cache_len=512)
    assert graph.graph_decode
    stats = GenerationStats()
    assert "".join(graph.stream(STORY, settings, stats)) == plain
    assert stats.new_tokens == plain_stats.new_tokens == 40 and stats.finish_reason == "length"
    capital = GenerationStats()
    assert "".join(graph.stream(CAPITAL, settings, capital)) == "".join(transformers_gen.stream(CAPITAL, settings))
    assert capital.finish_reason == "stop" and capital.new_tokens < 40  # ended at the end-of-turn token
    check_max_tokens_and_stop(graph)
    stream = graph.stream(STORY, GenerationSettings(max_new_tokens=200))
    next(stream)
    stream.close()  # frees the model: the next request does not wait
    assert graph._lock.acquire(timeout=1)
    graph._lock.release()
    with pytest.raises(GenerationError, match="over the 512-token cache"):
        list(graph.stream(STORY, GenerationSettings(max_new_tokens=500)))


# ------------------------------------------------------------------------------------ llama.cpp

@pytest.fixture(scope="module")
def llama_gen():
    if not llamacpp.available():
        pytest.skip('llama-cpp-python is not installed: pip install -e ".[llamacpp]"')
    return llamacpp.LlamaCppGenerator("bundled")


@needs_llamacpp
def test_llamacpp_streams_the_bundled_gguf(llama_gen, transformers_gen):
    stats = GenerationStats()
    pieces = list(llama_gen.stream(CAPITAL, GenerationSettings(max_new_tokens=12), stats))
    assert "paris" in "".join(pieces).lower() and stats.finish_reason == "stop"
    assert stats.prompt_tokens == transformers_gen.prompt_ids(CAPITAL).shape[1], "same chat template"
    stopped = check_max_tokens_and_stop(llama_gen)
    assert stopped.new_tokens < 24


@needs_llamacpp
def test_llamacpp_answers_the_same_as_transformers_on_the_same_weights(llama_gen, transformers_gen):
    """Greedy decoding of the same GGUF weights: the answer's start agrees token for token."""
    settings = GenerationSettings(max_new_tokens=10)
    messages = [{"role": "system", "content": "You are a bank's assistant."},
                {"role": "user", "content": "What should I do if my card is stolen?"}]
    ours = "".join(llama_gen.stream(messages, settings)).split()
    theirs = "".join(transformers_gen.stream(messages, settings)).split()
    assert ours[:4] == theirs[:4]


def test_weight_repacking_is_off_on_a_cpu_with_amx_unless_the_setting_says(monkeypatch):
    """llama.cpp's AMX weight buffer crashed the first decode on an AMX Xeon: repacking is off there by default."""
    monkeypatch.delenv("RA_LLAMA_REPACK", raising=False)
    monkeypatch.setattr(llamacpp, "cpu_has_amx", lambda: True)
    assert not llamacpp.weight_repacking()
    monkeypatch.setenv("RA_LLAMA_REPACK", "1")
    assert llamacpp.weight_repacking()
    monkeypatch.setattr(llamacpp, "cpu_has_amx", lambda: False)
    monkeypatch.delenv("RA_LLAMA_REPACK")
    assert llamacpp.weight_repacking()
    monkeypatch.setenv("RA_LLAMA_REPACK", "off")
    assert not llamacpp.weight_repacking()


@needs_llamacpp
def test_llamacpp_answers_without_weight_repacking_and_restores_the_defaults(monkeypatch):
    """The bundled model loaded with repacking off (the AMX path) answers; llama.cpp's defaults are back after."""
    import llama_cpp.llama_cpp as lib

    monkeypatch.setenv("RA_LLAMA_REPACK", "0")
    generator = llamacpp.LlamaCppGenerator("bundled")
    assert "paris" in "".join(generator.stream(CAPITAL, GenerationSettings(max_new_tokens=12))).lower()
    assert lib.llama_model_default_params().use_extra_bufts, "the wrapped defaults do not outlive the load"


def test_llamacpp_threads_follow_the_setting_and_reject_nonsense(monkeypatch):
    monkeypatch.delenv("RA_LLAMA_THREADS", raising=False)
    assert llamacpp.cpu_threads() == llamacpp.available_cores()
    monkeypatch.setenv("RA_LLAMA_THREADS", "1")
    assert llamacpp.cpu_threads() == 1
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("RA_LLAMA_THREADS", bad)
        with pytest.raises(SettingError, match="RA_LLAMA_THREADS must be a whole number"):
            llamacpp.cpu_threads()


def test_llamacpp_refuses_adapters_and_non_gguf_models():
    with pytest.raises(ModelSpecError, match="merge it and export a GGUF"):
        llamacpp.LlamaCppGenerator("bundled", adapter="runs/x/adapter")
    if llamacpp.available():
        with pytest.raises(ModelSpecError, match="needs a .gguf file"):
            llamacpp.LlamaCppGenerator("HuggingFaceTB/SmolLM2-135M-Instruct")


@needs_llamacpp
def test_assistant_on_llamacpp_answers_with_citations_and_audit(bank_bot, llama_gen):
    bot = Assistant(AssistantConfig(domain="bank", data_dir=bank_bot.config.data_dir, backend="llama-cpp"),
                    generator=llama_gen, embedder=bank_bot.embedder)
    response = bot.respond(WIRE, session_id="llama-cpp-test")
    assert response.action == "answer" and response.grounded and not response.refused
    assert any(s.cited for s in response.sources) and "$" in response.answer
    assert response.model == "SmolLM2-135M-Instruct (llama-cpp)"
    assert response.stats["new_tokens"] > 0 and response.latency_ms["ttft"] > 0
    rows = [json.loads(line) for line in bot.audit.export("jsonl").splitlines()]
    assert any(r["session_id"] == "llama-cpp-test" and r["model"].endswith("(llama-cpp)") for r in rows)


@needs_llamacpp
def test_cli_generate_json_on_llamacpp():
    result = run_cli("assistant", "generate", "Name three colours.", "--backend", "llama-cpp",
                     "--max-new-tokens", "8", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"text", "tokens", "ttft_ms", "tokens_per_s"} <= set(out)
    assert out["text"] and 1 <= out["tokens"] <= 8 and out["ttft_ms"] > 0 and out["backend"] == "llama-cpp"


# ------------------------------------------------------------------ OpenAI-compatible server

@pytest.fixture(scope="module")
def llama_server():
    """llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) on the bundled GGUF, on loopback."""
    if not llamacpp.available():
        pytest.skip('llama-cpp-python is not installed: pip install -e ".[llamacpp]"')
    try:
        import llama_cpp.server.app  # noqa: F401  (its extra's packages)
    except ImportError as exc:
        pytest.skip(f'llama-cpp-python[server] is not installed ({exc}): pip install -e ".[llamacpp]"')
    log_path = Path(ROOT) / ".pytest_cache" / "llama-server.log"
    log_path.parent.mkdir(exist_ok=True)
    with log_path.open("w") as log:
        try:
            proc, url = llamacpp.start_server(llamacpp.model_file("bundled"), free_port(), log=log)
        except RuntimeError as exc:
            pytest.fail(f"{exc}; its log: {log_path}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_openai_backend_streams_from_a_real_server(llama_server):
    gen = make_generator("openai", base_url=llama_server)
    assert gen.model_id == "smollm2-135m"  # the served name, read from /v1/models
    stats = GenerationStats()
    pieces = list(gen.stream(CAPITAL, GenerationSettings(max_new_tokens=12), stats))
    assert "paris" in "".join(pieces).lower() and stats.ttft_ms > 0
    check_max_tokens_and_stop(gen)


def test_assistant_through_an_openai_server(bank_bot, llama_server):
    bot = Assistant(AssistantConfig(domain="bank", data_dir=bank_bot.config.data_dir, backend="openai",
                                    base_url=llama_server, model="smollm2-135m"), embedder=bank_bot.embedder)
    response = bot.respond(WIRE)
    assert response.action == "answer" and response.grounded and not response.refused
    assert any(s.cited for s in response.sources) and "$" in response.answer
    assert response.model == "smollm2-135m (openai)"
    scripted = bot.respond("I want to speak to a human")
    assert scripted.action == "handoff" and scripted.ticket


class FlakyProxy(http.server.ThreadingHTTPServer):
    """Answers the first N chat requests with 503, forwards everything else to the real server."""

    def __init__(self, target: str, failures: int, hide_models: bool = False):
        self.target, self.failures, self.seen, self.hide_models = target, failures, 0, hide_models
        super().__init__(("127.0.0.1", 0), FlakyHandler)


class FlakyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        """Quiet: the tests read what the client got, not an access log."""

    def _forward(self, method: str) -> None:
        import httpx

        server: FlakyProxy = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if server.hide_models and self.path.endswith("/models"):
            self.send_response(404)
            self.end_headers()
            return
        if method == "POST":
            server.seen += 1
            if server.seen <= server.failures:
                self.send_response(503)
                self.end_headers()
                self.wfile.write(b'{"error": "overloaded"}')
                return
        with httpx.stream(method, server.target + self.path.removeprefix("/v1"), content=body,
                          headers={"Content-Type": "application/json"}, timeout=60) as upstream:
            self.send_response(upstream.status_code)
            self.send_header("Content-Type", upstream.headers.get("content-type", "application/json"))
            self.end_headers()
            for chunk in upstream.iter_raw():
                self.wfile.write(chunk)
                self.wfile.flush()

    def do_GET(self):
        self._forward("GET")

    def do_POST(self):
        self._forward("POST")


def test_openai_backend_retries_overloaded_server(llama_server):
    proxy = FlakyProxy(llama_server, failures=2)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}/v1"
        text = "".join(make_generator("openai", base_url=url, retries=2).stream(
            CAPITAL, GenerationSettings(max_new_tokens=12)))
        assert "paris" in text.lower() and proxy.seen == 3
        proxy.seen = 0
        with pytest.raises(GenerationError, match=r"after 2 tries \(HTTP 503"):
            list(make_generator("openai", base_url=url, retries=1).stream(CAPITAL, GenerationSettings()))
    finally:
        proxy.shutdown()


def test_openai_backend_works_with_a_server_without_a_model_list(llama_server):
    proxy = FlakyProxy(llama_server, failures=0, hide_models=True)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}/v1"
        gen = make_generator("openai", base_url=url, model="smollm2-135m")
        assert "paris" in "".join(gen.stream(CAPITAL, GenerationSettings(max_new_tokens=12))).lower()
        with pytest.raises(GenerationError, match="HTTP 404"):  # no name given and none listed
            make_generator("openai", base_url=url)
    finally:
        proxy.shutdown()


def test_openai_backend_unreachable_is_one_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.perf_counter()
    with pytest.raises(GenerationError, match="cannot reach the OpenAI-compatible server") as info:
        make_generator("openai", base_url=url, retries=1)
    assert "--base-url" in str(info.value) and time.perf_counter() - started < 10
    with pytest.raises(GenerationError, match="not an http"):
        make_generator("openai", base_url="localhost:8000")
    with pytest.raises(GenerationError, match="needs --base-url"):
        make_generator("openai")
    result = run_cli("assistant", "generate", "hi", "--backend", "openai", "--base-url", url, "--retries", "0",
                     timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot reach the OpenAI-compatible server")
