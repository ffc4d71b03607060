"""Fine-tune the assistant's LLM with LoRA (QLoRA in 4-bit on a GPU, float32 LoRA on CPU).

    python -m finetune --config finetune/configs/default.yaml [--max-steps 30] [--device cpu] [--FIELD VALUE ...]
    python -m finetune check-data --config ... [--train-files FILE,...]     # read and check the data only
    python -m finetune make-data --domain bank hospital --out FILE          # dialogues from domain packs
    python -m finetune make-data --format evidence --out finetune/data/evidence_dialogues.jsonl
    python -m finetune merge --adapter DIR --out DIR [--model bundled]      # a merged full model
    python -m finetune export-gguf --adapter DIR --out FILE.gguf            # for llama.cpp / Ollama

Every field of finetune.config.TrainConfig is an option (`--max-steps`, `--output-dir`, `--lora-r`,
`--packing`, `--no-packing`, ...). The run writes OUTPUT_DIR/adapter, report.md, metrics.json and
loss_curve.png; rerunning an interrupted run with the same output dir resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys

COMMANDS = ("train", "check-data", "make-data", "merge", "export-gguf")



def cmd_train(argv: list[str], check_only: bool = False) -> int:
    from finetune.config import argument_parser, load_config
    from finetune.data import check_bad_rows
    from finetune.train import report_data, train
    from index.errors import UserError

    parser = argument_parser(f"python -m finetune {'check-data' if check_only else '[train]'}",
                             description=__doc__)
    try:
        overrides = vars(parser.parse_args(argv))  # --help prints every field and exits here
        config_path = overrides.pop("config")
        config = load_config(config_path or "default.yaml", overrides)
        if check_only:
            report = report_data(config)
            print(report.summary(limit=50))
            check_bad_rows(report, config.max_bad_fraction)
            return 0
        metrics = train(config)
        if "adapter_dir" not in metrics:  # a data-parallel worker: the main process reports
            return 0
    except UserError as exc:  # anything else is a bug: it ends with its traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keys = ("eval_loss_before", "eval_loss_after", "eval_loss_change", "tokens_per_s", "peak_gpu_memory_gib",
            "adapter_dir")
    print(json.dumps({k: metrics[k] for k in keys}, indent=2))
    print(f"report: {metrics['adapter_dir'].rsplit('/', 1)[0]}/report.md")
    return 0


def cmd_make_data(argv: list[str]) -> int:
    from finetune.pack_data import make_data
    from index.errors import UserError

    p = argparse.ArgumentParser(prog="python -m finetune make-data",
                                description="turn domain packs into training dialogues (chat JSONL)")
    p.add_argument("--domain", nargs="+", default=["bank", "hospital"], help="pack names or folders")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", default="prompt", choices=("prompt", "evidence"),
                   help="prompt: numbered passages, as the generative answer mode prompts; evidence: the "
                        "selected evidence sentences and a verified short answer, as the evidence mode prompts")
    args = p.parse_args(argv)
    try:
        counts = make_data(args.domain, args.out, args.seed, fmt=args.format)
    except (OSError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "evidence":
        written = {k: v for k, v in counts.items() if "/" in k}
        print(f"wrote {sum(written.values())} dialogues to {args.out}: {written}")
        print("questions asked and dropped:", {k: v for k, v in counts.items() if "/" not in k})
    else:
        print(f"wrote {sum(counts.values())} dialogues to {args.out}: {counts}")
    return 0


def cmd_merge(argv: list[str], gguf: bool = False) -> int:
    from finetune.export import export_gguf, merge_adapter
    from index.errors import UserError

    name = "export-gguf" if gguf else "merge"
    p = argparse.ArgumentParser(prog=f"python -m finetune {name}")
    p.add_argument("--adapter", required=True, help="the adapter directory a run wrote (OUTPUT_DIR/adapter)")
    p.add_argument("--model", default=None, help="base model (default: the one the adapter was trained on)")
    p.add_argument("--out", required=True, help="output directory" + (" or .gguf file" if gguf else ""))
    if gguf:
        p.add_argument("--outtype", default="f16", choices=("f32", "f16", "bf16", "q8_0"))
    args = p.parse_args(argv)
    try:
        if gguf:
            path = export_gguf(args.adapter, args.out, model=args.model, outtype=args.outtype)
        else:
            path = merge_adapter(args.adapter, args.out, model=args.model)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from index.quiet import quiet_libraries

    quiet_libraries()
    command = argv[0] if argv and argv[0] in COMMANDS else "train"
    rest = argv[1:] if argv and argv[0] in COMMANDS else argv
    if command == "train":
        return cmd_train(rest)
    if command == "check-data":
        return cmd_train(rest, check_only=True)
    if command == "make-data":
        return cmd_make_data(rest)
    return cmd_merge(rest, gguf=command == "export-gguf")


if __name__ == "__main__":
    raise SystemExit(main())
