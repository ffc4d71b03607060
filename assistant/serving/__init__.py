"""Serving: the OpenAI-compatible HTTP API and its worker processes."""
