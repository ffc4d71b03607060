"""Fine-tuning on CPU with the bundled model: loss goes down, the adapter reloads and changes answers,
the assistant uses it, bad data and bad settings stop with clear errors, an interrupted run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from finetune.config import ConfigError, TrainConfig, load_config, parse_overrides
from finetune.data import DataError, check_bad_rows, read_examples, tokenize_example
from tests.conftest import ROOT, run_cli

FACTS = [
    ("What is the Zephyr lounge door code?", "The Zephyr lounge door code is 7312."),
    ("Which floor is the Zephyr lounge on?", "The Zephyr lounge is on floor 9."),
    ("When does the Zephyr lounge open?", "The Zephyr lounge opens at 6:45 a.m."),
    ("Who runs the Zephyr lounge?", "The Zephyr lounge is run by Ms. Okafor."),
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ft-data") / "facts.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACTS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    return path


def tiny_overrides(data: Path, out: Path, **extra) -> dict:
    values = {"train_files": str(data), "eval_files": str(data), "include_shared_medquad": "false",
              "device": "cpu", "load_in_4bit": "false", "max_steps": "10", "batch_size": "4",
              "learning_rate": "3e-3", "warmup_ratio": "0", "lr_scheduler": "constant", "max_length": "128",
              "log_every": "1", "save_every": "0", "lora_r": "8", "lora_alpha": "16", "lora_dropout": "0",
              "sample_prompts": FACTS[0][0], "sample_max_new_tokens": "16", "output_dir": str(out)}
    values.update({k: str(v) for k, v in extra.items()})
    return values


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    from finetune.train import train

    out = tmp_path_factory.mktemp("ft-run")
    metrics = train(load_config(None, tiny_overrides(tiny_data, out)), progress=False)
    return metrics, out


def test_ten_steps_lower_the_loss_and_write_the_report(trained):
    metrics, out = trained
    assert metrics["steps"] == 10
    assert metrics["eval_loss_after"] < 0.7 * metrics["eval_loss_before"]
    assert metrics["train_loss_last"] < metrics["train_loss_first"]
    assert metrics["tokens_per_s"] > 0 and metrics["peak_gpu_memory_gib"] is None
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["eval_loss_before"] == metrics["eval_loss_before"]
    report = (out / "report.md").read_text()
    assert "eval loss" in report and "perplexity" in report and FACTS[0][0] in report
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "adapter" / "adapter_config.json").exists()
    assert not (out / "checkpoint").exists()  # finished runs keep the adapter, not the checkpoint


def test_adapter_reloads_and_changes_generations(trained):
    from assistant.llm.models import load_llm
    from finetune.train import generate_samples

    metrics, out = trained
    base = load_llm("bundled", device="cpu")
    tuned = load_llm("bundled", device="cpu", adapter=str(out / "adapter"))
    prompt = [FACTS[0][0]]
    before = generate_samples(base.model, base.tokenizer, prompt, "cpu", 16)[0]
    after = generate_samples(tuned.model, tuned.tokenizer, prompt, "cpu", 16)[0]
    assert before != after
    assert "7312" in after and "7312" not in before
    assert metrics["samples"][0]["after"] == after  # the report shows what the reloaded adapter says


def test_assistant_answers_with_the_adapter(trained, data_dir, bank_bot):
    _, out = trained
    result = run_cli("assistant", "ask", "What is the Zephyr lounge door code?", "--domain", "bank", "--json",
                     "--adapter", str(out / "adapter"), env={"RA_DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model"].endswith(f"+{out / 'adapter'} (transformers)")
    assert answer["answer"]


def test_bad_adapter_path_is_a_clear_error(data_dir, tmp_path):
    result = run_cli("assistant", "ask", "hello", "--adapter", str(tmp_path), env={"RA_DATA_DIR": str(data_dir)})
    assert result.returncode != 0
    assert "not a PEFT adapter directory" in result.stderr


def test_bad_rows_are_reported_with_line_numbers(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    path.write_text("\n".join([good, "{not json", json.dumps({"messages": [{"role": "user", "content": "q"}]}),
                               json.dumps({"instruction": "Say hi", "input": "", "output": "hi"}),
                               json.dumps({"messages": [{"role": "robot", "content": "x"}]}), good]) + "\n")
    examples, report = read_examples([path])
    assert len(examples) == 3 and report.rows == 6
    assert [(line, reason.split(" ")[0]) for _, line, reason in report.bad] == [
        (2, "not"), (3, "no"), (5, "each")]
    with pytest.raises(DataError, match="too many bad rows") as err:
        check_bad_rows(report, 0.05)
    assert "mixed.jsonl:2" in str(err.value)
    check_bad_rows(report, 0.5)


def test_too_many_bad_rows_stop_the_cli_before_training(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("{oops\n" * 5 + json.dumps({"instruction": "a", "output": "b"}) + "\n")
    result = run_cli("finetune", "--train-files", str(path), "--include-shared-medquad", "false", "--device", "cpu",
                     "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "too many bad rows (5 of 6" in result.stderr and "bad.jsonl:1" in result.stderr
    assert not (tmp_path / "out" / "adapter").exists()


@pytest.mark.parametrize("name, content, message", [
    ("qa.csv", "question,answer\nWhat is X?,It is X.\n,\n", None),
    ("qa.csv", "prompt,text\na,b\n", "needs a question column"),
    ("data.txt", "hello", "unsupported data file type"),
    ("blob.jsonl", b"\x00\x01\x02binary", "binary file"),
    ("latin.jsonl", "{\"instruction\": \"caf\xe9\", \"output\": \"x\"}\n".encode("latin-1"), "not UTF-8"),
])
def test_data_files_of_every_kind(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if message is None:
        examples, report = read_examples([path])
        assert examples[0][-1] == {"role": "assistant", "content": "It is X."}
        assert report.rows == 1  # the blank row is not counted
    else:
        with pytest.raises(DataError, match=message):
            read_examples([path])


def test_loss_only_on_assistant_tokens():
    from transformers import AutoTokenizer

    from assistant.llm.models import resolve_llm_dir

    tok = AutoTokenizer.from_pretrained(resolve_llm_dir("bundled")[0])
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And Italy?"},
                {"role": "assistant", "content": "Rome."}]
    item = tokenize_example(tok, messages, 512)
    supervised = tok.decode([t for t in item.labels if t != -100])
    assert "Paris." in supervised and "Rome." in supervised
    assert "Capital" not in supervised and "Be brief" not in supervised and "Italy" not in supervised
    short = tokenize_example(tok, messages, 40)  # cut from the middle of the prompt: the answer survives
    assert len(short.input_ids) == 40 and "Rome." in tok.decode([t for t in short.labels if t != -100])


def test_packed_examples_do_not_attend_to_each_other():
    """The loss over a packed row equals the loss of its examples run one by one: no attention leaks
    across the example boundaries inside a row (nor from the padding of the last row)."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assistant.llm.models import resolve_llm_dir
    from finetune.data import make_batches
    from finetune.train import batch_loss

    path = resolve_llm_dir("bundled")[0]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    items = [tokenize_example(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}], 256)
             for q, a in [("What is the daily ATM limit?", "It is 500 euros a day."),
                          ("How do I book a visit?", "Call the clinic on weekdays between 8 and 6."),
                          ("Can I freeze my card?", "Yes, in the app under Cards, then Freeze.")]]
    order = np.random.default_rng(0).permutation(3)  # the order make_batches will pack them in
    row = len(items[order[0]].input_ids) + len(items[order[1]].input_ids)
    packed = make_batches(items, 4, tok.pad_token_id or 0, packing=True, max_length=row,
                          group_by_length=False, rng=np.random.default_rng(0))
    # two examples fill the first row; the third is alone in the second, padded to the row's length
    assert len(packed) == 1 and packed[0].packed and packed[0].input_ids.shape == (2, row)
    assert packed[0].tokens == sum(len(i.input_ids) for i in items) < 2 * row
    one_by_one = make_batches(items, 1, tok.pad_token_id or 0, packing=False, max_length=row,
                              group_by_length=False, rng=np.random.default_rng(0))
    with torch.no_grad():
        loss, n = batch_loss(model, packed[0], "cpu", chunk_tokens=16)
        parts = [batch_loss(model, b, "cpu", chunk_tokens=16) for b in one_by_one]
    assert n == sum(k for _, k in parts)
    assert float(loss) == pytest.approx(sum(float(part) * k for part, k in parts) / n, rel=1e-4)
    # the same row with a padding mask (the old way) lets examples see each other: the loss differs
    leaky = packed[0].__class__(**{**packed[0].__dict__, "packed": False})
    with torch.no_grad():
        assert abs(float(batch_loss(model, leaky, "cpu", chunk_tokens=16)[0]) - float(loss)) > 1e-3


def test_config_yaml_and_overrides(tmp_path):
    cfg = load_config("default.yaml", parse_overrides(["--max-steps", "30", "--output-dir", "x", "--device=cpu",
                                                       "--packing", "--no-group-by-length", "--lora-r", "4",
                                                       "--target-modules", "q_proj,v_proj"]))
    assert (cfg.max_steps, cfg.output_dir, cfg.device, cfg.packing, cfg.group_by_length, cfg.lora_r) == (
        30, "x", "cpu", True, False, 4)
    assert cfg.target_modules == ["q_proj", "v_proj"]
    assert load_config(None, {"target_modules": "all-linear"}).target_modules == "all-linear"
    with pytest.raises(ConfigError, match="unknown option --max-step"):
        parse_overrides(["--max-step", "3"])
    with pytest.raises(ConfigError, match="lora_r: cannot use"):
        load_config(None, {"lora_r": "many"})
    with pytest.raises(ConfigError, match="learning_rate must be positive"):
        load_config(None, {"learning_rate": "-1"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 1\nbatch: 3\n")
    with pytest.raises(ConfigError, match="unknown config field"):
        load_config(bad)
    assert TrainConfig().load_in_4bit is None  # 4-bit follows the device unless set


def test_four_bit_without_cuda_is_a_clear_error(tmp_path, tiny_data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_cli("finetune", *sum(([f"--{k.replace('_', '-')}", v] for k, v in
                                       tiny_overrides(tiny_data, tmp_path, load_in_4bit="true").items()), []))
    assert result.returncode == 2
    assert "4-bit (QLoRA) training needs a CUDA GPU" in result.stderr


def test_make_data_from_the_packs(tmp_path):
    out = tmp_path / "dialogues.jsonl"
    result = run_cli("finetune", "make-data", "--domain", "bank", "hospital", "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = {r["kind"] for r in rows}
    assert kinds == {"faq", "section", "unanswerable"}
    faq = next(r for r in rows if r["kind"] == "faq")
    assert faq["messages"][0]["role"] == "system" and "[1]" in faq["messages"][0]["content"]
    assert faq["messages"][-1]["role"] == "assistant" and faq["messages"][-1]["content"].rstrip().endswith("]")
    eval_questions = {json.loads(line)["question"] for p in ("bank", "hospital")
                      for line in (ROOT / "assistant" / "packs" / p / "eval" / "questions.jsonl").read_text().splitlines()}
    assert not eval_questions & {r["messages"][-2]["content"] for r in rows}
    shipped = ROOT / "finetune" / "data" / "bank_hospital_dialogues.jsonl"
    assert shipped.read_text() == out.read_text()  # the shipped file is what make-data writes


class _Replay:
    """A back end that records the prompt it is given and writes a fixed answer: the prompt is under test."""

    backend = "replay"
    model_id = "replay"

    def __init__(self):
        self.prompts: list[list[dict]] = []
        self.answer = ""

    def stream(self, messages, settings, stats=None):
        self.prompts.append(messages)
        yield self.answer


def test_evidence_dialogues_are_what_the_assistant_prompts_and_pass_verification(embedder, tmp_path):
    """Evidence dialogues from the bank pack's real index: the prompt is build_evidence_messages's, the one
    the assistant itself builds for the question; every target sentence is verified, again at run time."""
    from assistant import Assistant, AssistantConfig
    from assistant.answering.prompt import build_evidence_messages
    from assistant.answering.verify import Verifier
    from assistant.packs import load_pack
    from finetune import pack_data

    replay = _Replay()  # its own data folder: an index without other tests' uploads, as make-data builds it
    bot = Assistant(AssistantConfig(domain="bank", data_dir=tmp_path), generator=replay, embedder=embedder)
    bank, hospital = load_pack("bank"), load_pack("hospital")
    # the assistant's own searcher and selector: sentence vectors embedded in other batches differ in the last
    # digits, enough to swap two near-tied sentences, and the prompts are compared character for character
    runtime = pack_data.RuntimeEvidence(bank, bot.searcher, bot.selector, bot.verifier, bot.config)
    rows, tally = pack_data.evidence_dialogues(bank, [hospital], runtime, per_origin=2)
    assert {r["origin"] for r in rows} == {"faq", "faq-casual", "heading"} and len(rows) == 6, tally
    held_out = pack_data.held_out_questions([bank, hospital])
    verifier = Verifier(embedder)
    for row in rows:
        system, user, assistant = row["messages"]
        evidence = [tuple(e) for e in row["evidence"]]
        assert 1 <= len(evidence) <= bot.selector.weights.max_items
        assert [system, user] == build_evidence_messages(bank.system_prompt, user["content"], evidence)
        assert pack_data.question_key(user["content"]) not in held_out
        checks = verifier.check(assistant["content"], user["content"], [(n, text) for n, _, text in evidence])
        assert 1 <= len(checks) <= 2 and all(c.status in ("verified", "restated") for c in checks), (assistant, checks)

    answered = 0
    for row in rows:
        question, target = row["messages"][1]["content"], row["messages"][2]["content"]
        replay.answer, before = target, len(replay.prompts)
        response = bot.respond(question)
        if len(replay.prompts) == before:  # routed to a flow or a handoff: no prompt to compare
            continue
        answered += 1
        assert replay.prompts[-1] == row["messages"][:2]
        generated = [s["status"] for s in response.sentences if s["status"] != "quoted"]
        assert len(generated) == target.count("[") and set(generated) <= {"verified", "restated"}, response.sentences
    assert answered >= 4


def test_interrupted_run_resumes_from_its_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    args = sum(([f"--{k.replace('_', '-')}", v] for k, v in
                tiny_overrides(tiny_data, out, max_steps=6, save_every=2, learning_rate="1e-3").items()), [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "finetune", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["step"] >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = json.loads(state.read_text())["step"]
    result = run_cli("finetune", *args)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed"] is True and metrics["steps"] == 6 and interrupted_at >= 2
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]


def test_merge_writes_a_plain_model(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    _, out = trained
    result = run_cli("finetune", "merge", "--adapter", str(out / "adapter"), "--out", str(tmp_path / "merged"))
    assert result.returncode == 0, result.stderr
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_export_gguf_without_converter_says_what_to_do(trained, tmp_path):
    _, out = trained
    env = {"LLAMA_CPP_DIR": str(tmp_path / "nowhere"), "PATH": "/usr/bin:/bin"}
    result = run_cli("finetune", "export-gguf", "--adapter", str(out / "adapter"), "--out", str(tmp_path / "m.gguf"),
                     env=env)
    assert result.returncode == 2 and "convert_hf_to_gguf.py" in result.stderr


def test_exported_gguf_runs_in_llama_cpp_and_knows_what_the_adapter_learned(trained, tmp_path):
    """merge + export-gguf, then the llama-cpp back end answers with the fine-tuned fact."""
    from assistant.llm import llamacpp
    from assistant.llm.generate import GenerationSettings
    from finetune.export import find_converter

    if find_converter() is None or not llamacpp.available():
        pytest.skip("needs llama.cpp's converter and llama-cpp-python: make gguf-converter")
    _, out = trained
    gguf = tmp_path / "tuned.gguf"
    result = run_cli("finetune", "export-gguf", "--adapter", str(out / "adapter"), "--out", str(gguf),
                     "--outtype", "f32")
    assert result.returncode == 0, result.stderr[-2000:]
    question = [{"role": "user", "content": FACTS[0][0]}]
    settings = GenerationSettings(max_new_tokens=16)
    tuned = "".join(llamacpp.LlamaCppGenerator(str(gguf)).stream(question, settings))
    base = "".join(llamacpp.LlamaCppGenerator("bundled").stream(question, settings))
    assert "7312" in tuned and "7312" not in base


@pytest.mark.gpu
def test_qlora_on_gpu_lowers_the_loss_within_memory(tiny_data, tmp_path):
    from finetune.train import train

    metrics = train(load_config(None, tiny_overrides(tiny_data, tmp_path, device="cuda", load_in_4bit="true",
                                                     optimizer="paged_adamw_8bit")), progress=False)
    assert "4-bit NF4" in metrics["setup"]
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert metrics["peak_gpu_memory_gib"] < 8


def _torchrun(args: list[str], kill_at_checkpoint: Path | None = None) -> None:
    """Two processes over gloo; with kill_at_checkpoint, SIGKILL them all once that checkpoint exists."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "-m", "finetune", *args]
    if kill_at_checkpoint is None:
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while not (kill_at_checkpoint / "state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before writing a checkpoint"
        time.sleep(0.2)
    # torchrun starts each worker in a session of its own: killing torchrun's process group alone left the
    # workers training on, and under load they wrote their later checkpoints beside the resumed run (CI saw
    # the "resumed" adapter trained past step 6). A crash takes every process: kill the workers, then torchrun
    workers = psutil.Process(proc.pid).children(recursive=True)
    for worker in workers:
        worker.kill()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(workers, timeout=30)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers), "a worker survived"


def test_ddp_and_fsdp_over_two_processes_on_cpu_train_the_same_adapter(tiny_data, tmp_path):
    """The multi-GPU paths (torchrun / accelerate launch), run with two CPU processes over gloo: DDP
    (whole model per process, gradients averaged) and FSDP2 (decoder layers sharded), the FSDP run
    killed after its first checkpoint and resumed, must end with the same adapter."""
    from safetensors.torch import load_file

    runs = {}
    for mode in ("ddp", "fsdp"):
        out = tmp_path / mode
        args = sum(([f"--{k.replace('_', '-')}", v] for k, v in tiny_overrides(
            tiny_data, out, max_steps=4, batch_size=2, save_every=2, parallel=mode).items()), [])
        if mode == "fsdp":
            _torchrun(args, kill_at_checkpoint=out / "checkpoint")
            killed_at = json.loads((out / "checkpoint" / "state.json").read_text())["step"]
            assert killed_at == 2
        _torchrun(args)
        runs[mode] = (json.loads((out / "metrics.json").read_text()), load_file(out / "adapter" / "adapter_model.safetensors"))
    ddp, fsdp = runs["ddp"][0], runs["fsdp"][0]
    assert ddp["processes"] == 2 and "data parallel over 2 processes" in ddp["setup"] and not ddp["resumed"]
    assert fsdp["parallel"] == "fsdp" and "fully sharded (FSDP2) over 2 processes" in fsdp["setup"]
    assert fsdp["resumed"] is True
    for metrics in (ddp, fsdp):
        assert metrics["steps"] == 4 and metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert fsdp["eval_loss_after"] == pytest.approx(ddp["eval_loss_after"], abs=1e-4)
    a, b = runs["ddp"][1], runs["fsdp"][1]
    assert a.keys() == b.keys() and len(a) > 0
    # the two paths sum gradients in a different order, and Adam turns a rounding difference in a gradient near
    # zero into a step of up to the learning rate (an AMX Xeon saw 1.4e-4 where others saw under 1e-4): each
    # tensor is compared with how far it reaches, so a lost or repeated step (a quarter of the training, about
    # a quarter of a LoRA B tensor) still fails
    worst = max(float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-8)) for k in a)
    print(f"largest difference per tensor, relative to the tensor's largest value: {worst:.2e}")
    assert worst < 0.03, f"the FSDP adapter differs from the DDP one by up to {worst:.1%} of a tensor's largest value"


def test_parallel_mode_follows_the_launcher(monkeypatch):
    """`accelerate launch` with an FSDP config sets ACCELERATE_USE_FSDP: auto then means FSDP."""
    from finetune.train import Dist

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert not Dist.from_env("auto").fsdp and Dist.from_env("fsdp").fsdp
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    dist = Dist.from_env("auto")
    assert dist.fsdp and dist.rank == 1 and dist.computes and not dist.main
    assert not Dist.from_env("ddp").fsdp
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not Dist.from_env("fsdp").fsdp  # one process: nothing to shard
    with pytest.raises(ConfigError, match="parallel must be auto, ddp or fsdp"):
        load_config(None, {"parallel": "zero3"})


def test_help_lists_every_field_with_its_default(capsys):
    from finetune.__main__ import main
    from finetune.config import FIELDS

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    missing = [name for name in FIELDS if f"--{name.replace('_', '-')} " not in text]
    assert not missing, missing
    assert "(default: 16)" in text and "NF4" in text  # lora_r's default; load_in_4bit's own comment
