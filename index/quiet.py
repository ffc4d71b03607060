"""Keep library chatter (weight-loading bars, optional-kernel notices) off a user's terminal."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("transformers", "sentence_transformers", "bitsandbytes", "huggingface_hub", "bm25s"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


class _NoBar:
    """Stands in for a progress bar nobody sees: iterates, counts and closes without doing anything."""

    def __init__(self, iterable=None):
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable if self._iterable is not None else ())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def update(self, n: float = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(iterable=None, *, show: bool, **kwargs):
    """A tqdm bar when `show`, else a stand-in that creates none.

    A hidden bar is not created at all: Gradio replaces tqdm's methods when the app starts (to mirror bars in
    the browser), and a bar created before that and closed after it raises AttributeError. That stopped the
    UI's background work (the evidence warm-up, building the other packs) whenever it overlapped the start."""
    if not show:
        return _NoBar(iterable)
    from tqdm import tqdm

    return tqdm(iterable, **kwargs)
