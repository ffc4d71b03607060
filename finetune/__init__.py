"""LoRA / QLoRA fine-tuning of the assistant's LLM (`python -m finetune`, `make finetune`).

finetune.config (the settings dataclass, YAML + command-line overrides), finetune.data (reading,
checking, tokenising, packing), finetune.train (the training loop), finetune.report (report.md and
the loss curve), finetune.pack_data (dialogues from domain packs), finetune.export (merge, GGUF).
"""
