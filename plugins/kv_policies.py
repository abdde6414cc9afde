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

Stored codes (a KV storage such as ``kv-quant`` in the stack): a layer given a ``codec``
(``harness.kvcache.KVCodec``) holds its kept tokens as the codec's codes plus a
full-precision residual of the tokens added since the last flush, as transformers'
``QuantizedLayer`` does (KIVI): the prompt is encoded at once, the residual is flushed into
the codes when it reaches the codec's ``residual_length`` (0: every step). A step decodes
the codes, attends and evicts over full-precision tensors, then stores them again; the codes
are re-encoded only when eviction or a flush changed them. The budget counts codes and
residual together.
"""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import DynamicCache, DynamicLayer

from plugins.kv_evict import QUERY_CHUNK


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

    def __init__(self, budget: int, codec: Any = None) -> None:
        super().__init__()
        self.budget = budget
        self.seen = 0
        self.evicted = 0
        self.scores: Any = None
        #: where the evicted, seen and kept counts are mirrored after every step, so they
        #: outlive the cache (set by the owner)
        self.tally: dict[str, int] | None = None
        #: the ``KVCodec`` whose codes hold the kept tokens (None: plain tensors)
        self.codec = codec
        self.codes: Any = None  # (keys, values) of the first ``coded`` kept tokens
        self.coded = 0
        self.fresh = 0  # tokens added since the residual was last flushed into the codes
        self.added = 0  # tokens added in the current step
        self.thawed = True  # keys and values hold every kept token, not just the residual

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
        self.seen += key_states.shape[-2]
        self.added += key_states.shape[-2]
        self._thaw()
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        if not self.needs_scores:  # no scores to wait for: evict now, attend over all
            self._settle(self._evict(None))
        return keys, values

    def observe(self, query: Any, keys: Any, scaling: float) -> None:
        """After attention: score (if needed) and evict down to the budget."""
        if self.needs_scores:
            self._settle(self._evict(attention_scores(query, keys, scaling)))

    def _thaw(self) -> None:
        """Put the dequantized codes back in front of the residual."""
        import torch

        if self.thawed:
            return
        self.thawed = True
        if self.codes is not None:
            keys, values = (self.codec.decode(q) for q in self.codes)
            residual: Any = (self.keys, self.values)
            self.keys = torch.cat([keys, residual[0]], dim=-2)
            self.values = torch.cat([values, residual[1]], dim=-2)

    def _settle(self, evicted: bool) -> None:
        """End of a step: with a codec, store every kept token but the residual as codes;
        the tally (when set) gets the tokens seen and kept after the step."""
        added, self.added = self.added, 0
        self._store(evicted, added)
        if self.tally is not None:
            self.tally.setdefault("prompt", self.seen)  # the first step is the prefill
            self.tally["seen"] = self.seen
            self.tally["kept"] = self.kept()

    def _store(self, evicted: bool, added: int) -> None:
        if self.codec is None:
            return
        keys: Any = self.keys
        values: Any = self.values
        n = keys.shape[-2]
        self.fresh += added
        if self.fresh >= self.codec.residual_length or self.seen == added:
            self.fresh = 0  # the residual is full, or this is the prompt: quantize it all
        coded = n - min(self.fresh, n)
        if evicted or coded != self.coded:
            self.codes = None
            if coded:
                self.codes = (
                    self.codec.encode(keys[..., :coded, :], "key"),
                    self.codec.encode(values[..., :coded, :], "value"),
                )
            self.coded = coded
        self.keys = keys[..., coded:, :].clone()  # its own storage: the full tensor is freed
        self.values = values[..., coded:, :].clone()
        self.thawed = False

    def _evict(self, new_scores: Any) -> bool:
        """Keep what ``keep`` chooses; True if anything was evicted."""
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
            return False
        idx = keep.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        self.keys = keys.gather(2, idx).contiguous()
        self.values = values.gather(2, idx).contiguous()
        if self.scores is not None:
            self.scores = self.scores.gather(2, keep).contiguous()
        self.evicted += n - keep.shape[-1]
        if self.tally is not None:
            self.tally["evicted"] = self.evicted
        return True

    def keep(self, n: int) -> Any:
        """Indices (batch, kv_heads, kept) to keep, ascending; None keeps everything."""
        raise NotImplementedError

    def _full(self, positions: Any) -> Any:
        keys: Any = self.keys
        b, h = keys.shape[:2]
        return positions.to(keys.device).expand(b, h, -1)

    def get_seq_length(self) -> int:
        return self.seen

    def kept(self) -> int:
        """Tokens held per head: codes and residual."""
        keys: Any = self.keys
        held = keys.shape[-2] if self.is_initialized and keys.dim() == 4 else 0
        return held if self.thawed else held + self.coded

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        kept = self.kept()
        return kept + query_length, self.seen - kept

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0 and self.is_initialized:
            self._thaw()
            self.coded = -1  # the codes no longer match: stored anew at the next step
            self.fresh = max(0, self.fresh + tokens_to_remove)
            super().crop(tokens_to_remove)
            self.seen += tokens_to_remove
            if self.scores is not None:
                self.scores = self.scores[..., :tokens_to_remove]


class StreamingLayer(EvictingLayer):
    """StreamingLLM: the first ``sink`` tokens (attention sinks) and the most recent ones."""

    def __init__(self, budget: int, sink: int, codec: Any = None) -> None:
        super().__init__(budget, codec)
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

    def __init__(self, budget: int, recent: int, codec: Any = None) -> None:
        super().__init__(budget, codec)
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

    def __init__(self, budget: int, window: int, kernel: int, codec: Any = None) -> None:
        super().__init__(budget, codec)
        self.window = window
        self.kernel = kernel
        self.done = False

    def observe(self, query: Any, keys: Any, scaling: float) -> None:
        evicted = False
        if not self.done:
            self.done = True
            self.window = min(self.window, query.shape[2])
            evicted = self._evict(attention_scores(query[:, :, -self.window :], keys, scaling))
            self.scores = None
        self._settle(evicted)

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
