"""KV-cache eviction policies as transformers cache layers (used by ``plugins.kv_evict``).

A layer attends over everything it holds plus the new tokens, then evicts down to its
budget, so the *stored* cache never exceeds ``budget`` tokens per head after a step.

Positions: ``get_seq_length`` reports every token seen (``seen``), so the model keeps
computing RoPE positions (``cache_position``) as if nothing had been evicted; kept keys
keep the rotation of their original position and a new query sees true relative
distances. StreamingLLM instead re-rotates kept keys to their slot in the cache; we do
not (the model never sees positions beyond what the prompt and output reach anyway).
``get_mask_sizes`` maps the kept keys to positions ``seen − kept .. seen − 1``: every
kept key precedes every new query, which is all a causal mask needs.

Scores (H2O, SnapKV) come from ``observe``, called by the attention wrapper of
``kv_evict`` with the post-RoPE queries: softmax(q·kᵀ·scaling) under a causal mask,
summed over the queries and over the query heads of each KV head (GQA), giving one score
per KV head and key.
"""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import DynamicCache, DynamicLayer

#: Query rows scored at a time (bounds the score matrix of a long prefill).
QUERY_CHUNK = 512


def attention_scores(query: Any, keys: Any, scaling: float) -> Any:
    """Attention each key receives, summed over queries and grouped query heads.

    Args:
        query: (batch, heads, q, head_dim), post-RoPE.
        keys: (batch, kv_heads, n, head_dim); the last q keys belong to the queries.
        scaling: softmax scale (1/√head_dim).

    Returns:
        float32 tensor (batch, kv_heads, n): Σ over queries i and heads of the group of
        softmax_j(q_i·k_j·scaling) with key j visible to query i iff j ≤ n − q + i.
    """
    import torch

    b, h, q, d = query.shape
    kv, n = keys.shape[1], keys.shape[2]
    grouped = query.float().view(b, kv, h // kv, q, d)
    k = keys.float()
    total = torch.zeros(b, kv, n, dtype=torch.float32, device=keys.device)
    cols = torch.arange(n, device=keys.device)
    for start in range(0, q, QUERY_CHUNK):
        rows = torch.arange(start, min(start + QUERY_CHUNK, q), device=keys.device)
        logits = torch.einsum("bkgqd,bknd->bkgqn", grouped[:, :, :, rows], k) * scaling
        hidden = cols[None, :] > (n - q + rows)[:, None]
        probs = logits.masked_fill(hidden, float("-inf")).softmax(dim=-1)
        total += probs.sum(dim=(2, 3))
    return total


class EvictingLayer(DynamicLayer):
    """A dynamic layer that keeps at most ``budget`` tokens per head after each step.

    Subclasses choose which token indices to keep (``keep``); scores, where a policy
    needs them, are accumulated per kept key in ``scores`` (batch, kv_heads, kept).
    """

    needs_scores = False

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget
        self.seen = 0
        self.evicted = 0
        self.scores: Any = None
        #: where the evicted count is mirrored, so it outlives the cache (set by the owner)
        self.tally: dict[str, int] | None = None

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
        self.seen += key_states.shape[-2]
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        if not self.needs_scores:  # no scores to wait for: evict now, attend over all
            self._evict(None)
        return keys, values

    def observe(self, query: Any, keys: Any, scaling: float) -> None:
        """After attention: score (if needed) and evict down to the budget."""
        if self.needs_scores:
            self._evict(attention_scores(query, keys, scaling))

    def _evict(self, new_scores: Any) -> None:
        import torch

        if new_scores is not None:
            old = self.scores
            if old is not None and old.shape[-1] < new_scores.shape[-1]:
                pad = new_scores.shape[-1] - old.shape[-1]
                old = torch.nn.functional.pad(old, (0, pad))
            self.scores = new_scores if old is None else old + new_scores
        keys: Any = self.keys
        values: Any = self.values
        n = keys.shape[-2]
        keep = self.keep(n)
        if keep is None:
            return
        idx = keep.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        self.keys = keys.gather(2, idx).contiguous()
        self.values = values.gather(2, idx).contiguous()
        if self.scores is not None:
            self.scores = self.scores.gather(2, keep).contiguous()
        self.evicted += n - keep.shape[-1]
        if self.tally is not None:
            self.tally["evicted"] = self.evicted

    def keep(self, n: int) -> Any:
        """Indices (batch, kv_heads, kept) to keep, ascending; None keeps everything."""
        raise NotImplementedError

    def _full(self, positions: Any) -> Any:
        keys: Any = self.keys
        b, h = keys.shape[:2]
        return positions.to(keys.device).expand(b, h, -1)

    def get_seq_length(self) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        keys: Any = self.keys
        kept = keys.shape[-2] if self.is_initialized and keys.dim() == 4 else 0
        return kept + query_length, self.seen - kept

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0 and self.is_initialized:
            super().crop(tokens_to_remove)
            self.seen += tokens_to_remove
            if self.scores is not None:
                self.scores = self.scores[..., :tokens_to_remove]


class StreamingLayer(EvictingLayer):
    """StreamingLLM: the first ``sink`` tokens (attention sinks) and the most recent ones."""

    def __init__(self, budget: int, sink: int) -> None:
        super().__init__(budget)
        self.sink = sink

    def keep(self, n: int) -> Any:
        import torch

        if n <= self.budget:
            return None
        recent = self.budget - self.sink
        positions = torch.cat([torch.arange(self.sink), torch.arange(n - recent, n)])
        return self._full(positions[None, None])


class H2OLayer(EvictingLayer):
    """H2O: the ``recent`` newest tokens plus the keys of largest accumulated attention."""

    needs_scores = True

    def __init__(self, budget: int, recent: int) -> None:
        super().__init__(budget)
        self.recent = recent

    def keep(self, n: int) -> Any:
        import torch

        if n <= self.budget:
            return None
        old = n - self.recent
        heavy = self.scores[..., :old].topk(self.budget - self.recent, dim=-1).indices
        recent = self._full(torch.arange(old, n)[None, None])
        return torch.cat([heavy, recent], dim=-1).sort(dim=-1).values


class SnapKVLayer(EvictingLayer):
    """SnapKV: once, at the end of prefill, keep the prompt positions the last ``window``
    prompt queries attend to most (scores average-pooled over ``kernel`` neighbours), plus
    the window itself; generated tokens are then appended without eviction."""

    needs_scores = True

    def __init__(self, budget: int, window: int, kernel: int) -> None:
        super().__init__(budget)
        self.window = window
        self.kernel = kernel
        self.done = False

    def observe(self, query: Any, keys: Any, scaling: float) -> None:
        if self.done:
            return
        self.done = True
        window = min(self.window, query.shape[2])
        scores = attention_scores(query[:, :, -window:], keys, scaling)
        self.window = window
        self._evict(scores)
        self.scores = None

    def keep(self, n: int) -> Any:
        import torch

        if n <= self.budget:
            return None
        prefix = n - self.window
        pooled = torch.nn.functional.avg_pool1d(
            self.scores[..., :prefix].flatten(0, 1).unsqueeze(1),
            self.kernel,
            stride=1,
            padding=self.kernel // 2,
            count_include_pad=False,
        ).view(*self.scores.shape[:2], -1)[..., :prefix]
        top = pooled.topk(self.budget - self.window, dim=-1).indices
        window = self._full(torch.arange(prefix, n)[None, None])
        return torch.cat([top, window], dim=-1).sort(dim=-1).values


class EvictingCache(DynamicCache):
    """A ``DynamicCache`` whose layers are eviction-policy layers (one per decoder layer)."""

    def __init__(self, layers: list[EvictingLayer]) -> None:
        from transformers.cache_utils import Cache

        Cache.__init__(self, layers=layers)  # type: ignore[arg-type]

    def observe(self, layer_idx: int, query: Any, keys: Any, scaling: float) -> None:
        layer = self.layers[layer_idx]
        if isinstance(layer, EvictingLayer):
            layer.observe(query, keys, scaling)
