"""LoRA / QLoRA fine-tuning of the assistant's LLM (`python -m finetune`, `make finetune`).

Planned in the project's fine-tuning issue; the package exists so the four-part layout installs as one project.
"""
