"""Decoding with a feature-level draft: its cache, fed from the target runner's hidden states.

The draft's entry ``j`` is computed from (state at ``j-1``, token ``j``) and predicts the
target's state at ``j`` (hence the logits for token ``j+1``). Where the target has already
verified position ``j-1`` its exact state is used; beyond, while drafting ahead, the
draft's own prediction. An entry built on a predicted state is recomputed once the
target's exact state for it exists (after the next verification), so every chunk starts
from the target's true state. Same verbs as :class:`~voicestream.spec.runner.ModelRunner`
(``advance_to``, ``extend``, ``rollback``, ``release``), so the decoder drives it alike.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .feature_draft import FeatureDraft
from .lean_runner import (WEIGHTS_ATTR, BuiltPerModel, Geometry, LeanLayer, LeanLlamaRunner, SequenceKV, _script_stack,
                          run_layers)
from .quant import Linear, make_linear
from .runner import common_prefix


class LeanFeatureDraft(BuiltPerModel):
    """A :class:`FeatureDraft`'s weights in the lean forward's form (fused, norm-folded,
    int8 when the draft's weight format says so): the draft runs once per drafted token,
    so its step must cost a small fraction of a target forward. Shared by every generation
    (:meth:`of`)."""

    def __init__(self, draft: FeatureDraft) -> None:
        cfg = draft.config
        self.model = draft
        self.weights = getattr(draft, WEIGHTS_ATTR, "fp32")
        self.dtype = torch.float32 if self.weights == "int8" else draft.fc.weight.dtype
        self.geo = Geometry(cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.rms_norm_eps)
        with torch.no_grad():
            self.fc: Linear = make_linear(self.weights, draft.fc.weight)
            self.layers = [LeanLayer(self.geo, self.weights, q=layer.q_proj, k=layer.k_proj, v=layer.v_proj,
                                     o=layer.o_proj, gate=layer.gate_proj, up=layer.up_proj, down=layer.down_proj,
                                     in_norm=layer.input_norm, post_norm=layer.post_norm) for layer in draft.layers]
            self.final_norm = draft.final_norm.detach().to(self.dtype)
        self.stack = _script_stack(self.layers)

    def step(self, feats: torch.Tensor, embeds: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None,
             kv: SequenceKV) -> torch.Tensor:
        """Predicted (normed) target states (B, q, H) for state inputs ``feats`` and token
        ``embeds`` (B, q, H each); the step's keys and values go to ``kv``."""
        cos, sin = self.model.rope(positions)  # (B, 1, q, hd)
        cos, sin = cos.transpose(1, 2).to(self.dtype), sin.transpose(1, 2).to(self.dtype)
        x = run_layers(self.layers, self.stack, self.fc(torch.cat([feats, embeds], -1).to(self.dtype)), cos, sin,
                       mask, kv)
        return F.rms_norm(x, (x.shape[-1],), self.final_norm, self.geo.eps)


class FeatureDraftRunner:
    """One generation's draft cache for a :class:`FeatureDraft` bound to ``target`` (its runner)."""

    def __init__(self, draft: FeatureDraft, target: LeanLlamaRunner) -> None:
        if not isinstance(target, LeanLlamaRunner):
            raise TypeError("a feature draft needs the target on the lean forward (a Llama/Qwen2/Mistral target)")
        self.model = draft
        self.lean = LeanFeatureDraft.of(draft)
        self.target = target
        self.device = target.device
        self.embed = target.lean.embed
        self.tokens: list[int] = []
        self.exact: list[bool] = []  # entry j was built on the target's own state at j-1
        self.forwards = 0
        cfg = draft.config
        self._dtype = self.lean.dtype
        self._kv_shape = (len(draft.layers), 1, cfg.num_key_value_heads, 0, cfg.head_dim)  # (layer, batch, heads, T, hd)
        self._k = self._v = self._pred = None
        self._capacity = 0
        self._last_logits: torch.Tensor | None = None
        self._pinned: list[int] | None = None

    def pin(self, verified: Sequence[int] | None) -> None:
        """Overlapped decoding: read the target's exact states only for ``verified`` (committed
        tokens the target has fed, a snapshot) instead of its live cache, which the target's
        thread changes meanwhile; None reads the live cache again."""
        self._pinned = None if verified is None else list(verified)

    def _exact_upto(self, seq: Sequence[int]) -> int:
        """Leading positions of ``seq`` whose exact target state can be read."""
        return self.target.common_prefix(seq) if self._pinned is None else common_prefix(self._pinned, seq)

    # --- storage ------------------------------------------------------------------------
    def _ensure(self, n: int) -> None:
        if self._k is not None and self._capacity >= n:
            return
        cap = max(n, 2 * self._capacity, 256)
        layers, b, h, _, d = self._kv_shape
        k = torch.zeros(layers, b, h, cap, d, dtype=self._dtype, device=self.device)
        v = torch.zeros_like(k)
        pred = torch.zeros(cap, self.model.config.hidden_size, dtype=self._dtype, device=self.device)
        if self._k is not None:
            used = len(self.tokens)
            k[..., :used, :], v[..., :used, :], pred[:used] = (
                self._k[..., :used, :], self._v[..., :used, :], self._pred[:used])
        self._k, self._v, self._pred, self._capacity = k, v, pred, cap

    def release(self) -> None:
        self._k = self._v = self._pred = None
        self._capacity = 0
        self.tokens, self.exact = [], []
        self._last_logits = None

    def rollback(self, length: int) -> None:
        if length < 0 or length > len(self.tokens):
            raise ValueError(f"cannot roll back to {length}; cache holds {len(self.tokens)} entries")
        if length < len(self.tokens):
            del self.tokens[length:]
            del self.exact[length:]
            self._last_logits = None

    # --- the forward --------------------------------------------------------------------
    def _run(self, tokens: list[int], feats: torch.Tensor) -> torch.Tensor:
        """Entries for ``tokens`` after the cached ones; ``feats`` (k, H) their state inputs."""
        start, k = len(self.tokens), len(tokens)
        end = start + k
        self._ensure(end)
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)
        emb = F.embedding(ids, self.embed)[None]
        positions = torch.arange(start, end, device=self.device)[None]
        mask = torch.ones(k, end, dtype=torch.bool, device=self.device).tril(start) if k > 1 else None
        pred = self.lean.step(feats[None], emb, positions, mask, SequenceKV(self._k, self._v, start, end))
        self._pred[start:end] = pred[0]
        self.tokens.extend(tokens)
        self.forwards += 1
        return pred[0]

    def _feed(
        self, seq: Sequence[int], start: int, exact_upto: int, span: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Entries start..len(seq)-1, where the target has the exact states of ``seq``'s first
        ``exact_upto`` positions: one forward for the entries whose state input is exact, then
        one each for the rest, on the state the entry before predicted."""
        n_exact = max(0, min(len(seq), exact_upto + 1) - start)
        pred = None
        if n_exact:
            feats = self.target.features(start + n_exact - 1, checked=self._pinned is None)[max(start - 1, 0) :]
            if start == 0:  # entry 0 has no state before it (a one-token prompt has no states at all)
                zero = torch.zeros(1, self.model.config.hidden_size, dtype=self._dtype, device=self.device)
                feats = torch.cat([zero, feats.to(self._dtype).reshape(-1, zero.shape[1])], 0)
            pred = self._run(list(seq[start : start + n_exact]), feats[:n_exact])
            self.exact.extend([True] * n_exact)
        for j in range(start + n_exact, len(seq)):  # j > exact_upto >= 0: entry j-1 exists
            pred = self._run([int(seq[j])], self._pred[j - 1 : j])
            self.exact.append(False)
        assert pred is not None
        logits = self.target.lean.logits(pred[-1:].to(self.target.lean.dtype), span)
        self._last_logits = logits[-1]
        return logits

    def advance_to(self, seq: Sequence[int], *, span: tuple[int, int] | None = None) -> torch.Tensor:
        """Make the cache hold ``seq`` (recomputing entries whose state input has since been
        verified) and return the logits for the token after it, (V,)."""
        if not seq:
            raise ValueError("advance_to() needs a non-empty sequence")
        keep = 0
        n = min(len(self.tokens), len(seq))
        exact_upto = self._exact_upto(seq)  # leading positions with the target's exact state
        while keep < n and self.tokens[keep] == seq[keep] and (self.exact[keep] or keep - 1 >= exact_upto):
            keep += 1
        if keep == len(seq) == len(self.tokens) and self._last_logits is not None:
            return self._last_logits
        keep = min(keep, len(seq) - 1)
        self.rollback(keep)
        return self._feed(seq, keep, exact_upto, span)[-1]

    def extend(
        self, tokens: Sequence[int], *, last_only: bool = False, span: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Draft ahead by ``tokens``; returns the logits after the last, (1, V) (only
        ``span``'s ids computed when given)."""
        if not tokens:
            raise ValueError("extend() needs at least one token")
        seq = self.tokens + [int(t) for t in tokens]
        return self._feed(seq, len(self.tokens), self._exact_upto(seq), span)

    def __len__(self) -> int:
        return len(self.tokens)
