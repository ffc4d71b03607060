"""The `llama-cpp` back end: llama.cpp (through llama-cpp-python) on a GGUF file, the fast path on CPU.

    pip install -e ".[llamacpp]"     # compiles llama.cpp (a few minutes on 2 cores)

The prompt is the GGUF's own chat template, rendered as transformers renders it. A fine-tuned adapter
reaches this back end through `python -m finetune merge` and `python -m finetune export-gguf`, then
`--model FILE.gguf`.

The bundled model ships as Q4_1, a type llama.cpp has no fast batched kernel for on x86: reading a
1,000-token prompt took 3.3 s on 2 cores. So it is re-quantised once to Q8_0 (144 MB, 0.4 s, cached
beside the converted checkpoint), which reads the same prompt in about 1.6 s and decodes faster too
(measured in README, `make bench-generate`). Other GGUF files are used as they are.
"""

from __future__ import annotations

import codecs
import ctypes
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from assistant.config import GGUF_QUANTS
from assistant.llm.generate import (
    GenerationError,
    GenerationSettings,
    GenerationStats,
    stream_tokens,
)
from assistant.llm.models import BUNDLED_LLM_NAME, ModelSpecError, bundled_gguf, cache_dir
from index.errors import SettingError

INSTALL_HINT = 'the llama-cpp back end needs llama-cpp-python: run `pip install -e ".[llamacpp]"`'
# ChatML, for a GGUF that carries no chat template (SmolLM2's own template is ChatML too)
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
          " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")


def available() -> bool:
    """True when llama-cpp-python is installed (without importing it: that loads the shared library)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def gguf_path(spec: str) -> Path:
    """The GGUF file for a model spec: `bundled` or a path to a .gguf file."""
    if spec == "bundled":
        return bundled_gguf()
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return path
    raise ModelSpecError(
        f"model spec '{spec}': the llama-cpp back end needs a .gguf file (or `bundled`); "
        "convert a transformers model with `python -m finetune export-gguf`, or use --backend transformers"
    )


QUANTS = GGUF_QUANTS


def requantised(gguf: Path, quant: str = "q8_0") -> Path:
    """A copy of a GGUF in another llama.cpp type (q8_0 or q4_0), made once in the cache."""
    import llama_cpp

    ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0}[quant]
    stat = gguf.stat()
    target = cache_dir() / "models" / f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}.{quant.upper()}.gguf"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once quantise once
        if target.exists():
            return target
        tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.allow_requantize = True
        params.nthread = cpu_threads()
        with _quiet_stderr():  # llama.cpp prints a line per tensor
            failed = llama_cpp.llama_model_quantize(str(gguf).encode(), str(tmp).encode(), ctypes.byref(params))
        if failed or not tmp.exists():
            tmp.unlink(missing_ok=True)
            raise ModelSpecError(f"llama.cpp could not re-quantise {gguf} to {quant} (code {failed})")
        os.replace(tmp, target)
    return target


class _quiet_stderr:
    """Silence C-level writes to stderr (file descriptor 2) for a block."""

    def __enter__(self):
        import sys

        sys.stderr.flush()
        self.saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)


def model_file(spec: str, quant: str = "auto") -> Path:
    """The file llama.cpp loads: `auto` is the bundled model's Q8_0 copy, or another .gguf as it is."""
    if quant not in QUANTS:
        raise SettingError(f"--gguf-quant must be one of {', '.join(QUANTS)} (got {quant})")
    path = gguf_path(spec)
    if quant == "auto":
        quant = "q8_0" if spec == "bundled" else "as-is"
    return path if quant == "as-is" else requantised(path, quant)


def cpu_has_amx() -> bool:
    """True when the CPU offers Intel AMX (Sapphire Rapids and later Xeons), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return "amx_int8" in line.split()
    except OSError:
        pass
    return False


def weight_repacking() -> bool:
    """Whether llama.cpp may repack the weights into its extra CPU buffer types (AMX, CPU_REPACK).

    Off on a CPU with AMX: llama.cpp compiled for such a CPU (`-march=native`) puts the weights in its AMX
    buffer, and the first decode crashed the process with a segmentation fault (llama-cpp-python 0.3.36 on a
    2-core Xeon VM with amx_int8, 2026-12-02; ggml-org/llama.cpp#20824). Without repacking the same build
    answers. `RA_LLAMA_REPACK=1` forces it on, `0` off."""
    setting = os.environ.get("RA_LLAMA_REPACK", "").strip().lower()
    if setting in ("1", "true", "yes", "on"):
        return True
    if setting in ("0", "false", "no", "off"):
        return False
    return not cpu_has_amx()


_PARAMS_LOCK = threading.Lock()


class _model_params:
    """While a Llama loads: its model parameters with `use_extra_bufts` as `weight_repacking()` says.
    llama-cpp-python's `Llama` does not take that parameter, so its default-parameter function is wrapped for
    the duration of the load (under a lock: one load at a time changes it)."""

    def __enter__(self):
        import llama_cpp.llama_cpp as lib

        _PARAMS_LOCK.acquire()
        self.lib, self.original = lib, lib.llama_model_default_params
        if not weight_repacking():
            original = self.original

            def without_repacking():
                params = original()
                params.use_extra_bufts = False
                return params

            lib.llama_model_default_params = without_repacking
        return self

    def __exit__(self, *exc):
        self.lib.llama_model_default_params = self.original
        _PARAMS_LOCK.release()


def available_cores() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cpu_threads() -> int:
    """The threads llama.cpp runs on: `RA_LLAMA_THREADS` when set, else every core this process may use
    (llama-cpp-python's own default is half of them). Processes that each run llama.cpp on the same cores
    must share them out (`serve --workers N` does): its threads wait for each other by spinning, and two
    processes decoding at once on 2 cores made 19 tokens/s each with 2 threads apiece, 45 with 1 (82 alone)."""
    setting = os.environ.get("RA_LLAMA_THREADS", "").strip()
    if not setting:
        return available_cores()
    if not setting.isdigit() or int(setting) < 1:
        raise SettingError(f"RA_LLAMA_THREADS must be a whole number of threads, at least 1 (got {setting!r})")
    return int(setting)


class LlamaCppGenerator:
    """Streams tokens from llama.cpp; one generation at a time per loaded model."""

    backend = "llama-cpp"

    def __init__(self, spec: str = "bundled", *, n_ctx: int = 2048, threads: int | None = None,
                 gpu_layers: int = 0, adapter: str | None = None, quant: str = "auto"):
        if adapter:
            raise ModelSpecError(
                f"--adapter {adapter}: llama.cpp cannot apply a PEFT adapter; merge it and export a GGUF "
                "(`python -m finetune merge`, then `export-gguf`) and pass that file with --model, "
                "or use --backend transformers"
            )
        if not available():
            raise ModelSpecError(INSTALL_HINT)
        from llama_cpp import Llama, llama_vocab_is_eog
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = model_file(spec, quant)
        started = time.time()
        threads = threads or cpu_threads()
        try:
            with _model_params():
                self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=512, n_threads=threads,
                                 n_threads_batch=threads, n_gpu_layers=gpu_layers, flash_attn=True,
                                 verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelSpecError(f"model spec '{spec}' could not be loaded by llama.cpp: {exc}") from exc
        self.load_seconds = time.time() - started
        self.path = path
        self.model_id = BUNDLED_LLM_NAME if spec == "bundled" else gguf_path(spec).stem
        if quant not in ("auto", "as-is"):  # a type the user chose shows in answers and the audit log
            self.model_id += f" {quant.upper()}"
        self.n_ctx = n_ctx
        self._is_eog = lambda token: llama_vocab_is_eog(self.llm._model.vocab, token)
        meta = self.llm.metadata
        vocab = self.llm._model
        self.formatter = Jinja2ChatFormatter(
            template=meta.get("tokenizer.chat_template") or CHATML,
            eos_token=vocab.token_get_text(self.llm.token_eos()),
            bos_token=vocab.token_get_text(self.llm.token_bos()) if self.llm.token_bos() >= 0 else "",
        )
        self._lock = threading.Lock()

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        prompt = self.formatter(messages=messages).prompt
        # the template writes any BOS itself; special=True reads <|im_start|> etc. as single tokens
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def stream(self, messages: list[dict], settings: GenerationSettings,
               stats: GenerationStats | None = None) -> Iterator[str]:
        stats = stats if stats is not None else GenerationStats()
        tokens = self.prompt_tokens(messages)
        stats.prompt_tokens = len(tokens)
        if len(tokens) + settings.max_new_tokens > self.n_ctx:
            raise GenerationError(
                f"prompt is {len(tokens)} tokens; with {settings.max_new_tokens} new tokens that is over the "
                f"{self.n_ctx}-token context: lower top-k, the chunk size or --max-new-tokens"
            )
        greedy = settings.temperature <= 0
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span tokens
        with self._lock:
            tokens_out = self.llm.generate(tokens, temp=0.0 if greedy else settings.temperature,
                                           top_p=settings.top_p, top_k=40, min_p=0.0,
                                           repeat_penalty=settings.repetition_penalty)
            yield from stream_tokens(tokens_out, self._is_eog,
                                     lambda token: decoder.decode(self.llm.detokenize([token])),
                                     lambda: decoder.decode(b"", final=True), settings, stats)


def start_server(gguf: Path, port: int, *, alias: str = "smollm2-135m", threads: int | None = None,
                 log=None, timeout: float = 120.0):
    """Start llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) on loopback; wait until it
    lists its model. Returns (process, base URL). The caller terminates the process."""
    import subprocess
    import sys

    import httpx

    # llama.cpp's own server, started through assistant.llm.llamacpp_server (weight repacking as above)
    proc = subprocess.Popen([sys.executable, "-m", "assistant.llm.llamacpp_server", "--model", str(gguf), "--model_alias", alias,
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                             "--n_threads", str(threads or cpu_threads()), "--flash_attn", "true"],
                            stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"llama.cpp server did not answer within {timeout:.0f} s")
