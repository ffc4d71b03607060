"""Greedy decoding for one stream on CUDA: a static KV cache and the one-token step compiled once.

`model.generate` spends most of each step in Python around the forward pass (logits processors,
stopping criteria, bookkeeping): for a 135M model on a GPU that overhead, not the model, sets the
speed. Here the step is only the forward pass and an argmax on the GPU, compiled by torch.compile
with CUDA graphs (`mode="reduce-overhead"`), so a token costs one graph replay and one device-to-host
copy. The prompt is read eagerly into the same static cache. The cache is preallocated for
`max_cache_len` tokens and reset in place between requests, so the compiled graph is reused.

Off CUDA (tests) the step runs eagerly and gives the same tokens as greedy `generate`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from index.errors import SettingError


class GraphDecoder:
    """Yields greedy token ids for a prompt, one at a time; one request at a time (the caller locks)."""

    def __init__(self, model, max_cache_len: int = 2048, *, compile: bool | None = None):
        import torch
        from transformers import StaticCache

        self.model = model
        self.device = next(model.parameters()).device
        # transformers renamed `past_key_values` to `cache` (the old name goes in 5.40); a PEFT model
        # passes either through to its base model, whose signature says which one it takes
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        names = inspect.signature(base.forward).parameters
        self._cache_arg = "cache" if "cache" in names else "past_key_values"
        self.max_cache_len = max_cache_len
        self.cache = StaticCache(config=model.config, max_cache_len=max_cache_len)
        compile = self.device.type == "cuda" if compile is None else compile
        self._step = (torch.compile(self._forward_one, mode="reduce-overhead", fullgraph=True) if compile
                      else self._forward_one)

    def _forward_one(self, token, position):
        out = self.model(input_ids=token, position_ids=position.unsqueeze(0), cache_position=position,
                         use_cache=True, **{self._cache_arg: self.cache})
        return out.logits[:, -1].argmax(-1)

    def tokens(self, input_ids, max_new_tokens: int) -> Iterator[int]:
        """Greedy continuation of `input_ids` (1 x n, on the model's device), up to max_new_tokens ids.
        Each step runs in inference mode; the caller's code between tokens does not."""
        import torch

        n = int(input_ids.shape[1])
        if n + max_new_tokens > self.max_cache_len:
            raise SettingError(f"{n} prompt tokens + {max_new_tokens} new ones exceed the {self.max_cache_len}-token cache")
        with torch.inference_mode():
            self.cache.reset()
            logits = self.model(input_ids=input_ids, cache_position=torch.arange(n, device=self.device),
                                use_cache=True, logits_to_keep=1, **{self._cache_arg: self.cache}).logits
            token = logits[:, -1].argmax(-1)
            position = torch.tensor([n], device=self.device)
        for i in range(max_new_tokens):
            yield int(token)  # the one device-to-host copy a step
            if i + 1 < max_new_tokens:
                with torch.inference_mode():
                    token = self._step(token.view(1, 1), position).clone()  # a replayed graph reuses its output
                    position += 1
