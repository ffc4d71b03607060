"""Gradio chat UI over the Assistant (`python -m ui`)."""
