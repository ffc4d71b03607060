"""Answering from the documents: evidence selection, the prompt, verification, grounding, citations, the composed answer."""
