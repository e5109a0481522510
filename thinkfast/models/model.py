"""``ThinkfastLM``: a Llama-style stack of blocks whose mixers are attention or Mamba-2 (SSD), chosen per layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from thinkfast.kernels import Kernels
from thinkfast.models import pointwise
from thinkfast.models.attention import Attention
from thinkfast.models.cache import InferenceCache
from thinkfast.models.config import ModelConfig
from thinkfast.models.layers import RMSNorm, SwiGLU
from thinkfast.models.ssm import SSMMixer


def segment_index(doc_ids: torch.Tensor | None) -> torch.Tensor | None:
    """Document ids ``(B, L)`` -> non-decreasing int32 segment index ``(B, L)`` that grows at each change of id."""
    if doc_ids is None:
        return None
    changes = torch.zeros_like(doc_ids, dtype=torch.int32)
    changes[:, 1:] = (doc_ids[:, 1:] != doc_ids[:, :-1]).to(torch.int32)
    return torch.cumsum(changes, dim=1, dtype=torch.int32)


def document_positions(seq_idx: torch.Tensor) -> torch.Tensor:
    """Position of each token inside its document ``(B, L)`` long, from a segment index ``(B, L)``."""
    idx = torch.arange(seq_idx.shape[1], device=seq_idx.device).expand_as(seq_idx)
    starts = torch.zeros_like(idx)
    starts[:, 1:] = torch.where(seq_idx[:, 1:] != seq_idx[:, :-1], idx[:, 1:], 0)
    return idx - torch.cummax(starts, dim=1).values


class Block(nn.Module):
    """Pre-norm residual block: ``h = x + mixer(norm(x)); out = h + mlp(norm(h))``, ``(B, L, D) -> (B, L, D)``."""

    def __init__(self, config: ModelConfig, layer_idx: int, *, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.layer_idx = layer_idx
        self.kind = config.mixers[layer_idx]
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)
        self.mixer: Attention | SSMMixer = (Attention if self.kind == "attention" else SSMMixer)(config, **kw)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size, config.mlp_bias, **kw)

    def forward(self, x: torch.Tensor, doc_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, *, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, L, D)``; ``doc_ids`` ``(B, L)`` (or a precomputed ``seq_idx``); ``position_ids`` ``(B, L)``."""
        if seq_idx is None:
            seq_idx = segment_index(doc_ids)
        h = x + self.mixer(self.input_layernorm(x), seq_idx, position_ids)
        return h + self.mlp(self.post_attention_layernorm(h))

    def prefill(self, x: torch.Tensor, cache, slots: torch.Tensor, rows: torch.Tensor | None = None,
                seq_idx: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Prompts ``x`` ``(P, L, D)`` -> ``(P, L, D)``, writing the mixer's state into ``cache`` (see the mixers)."""
        h = x + self.mixer.prefill(self.input_layernorm(x), cache, slots, rows, seq_idx, position_ids)
        return h + self.mlp(self.post_attention_layernorm(h))

    def step(self, x: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        h = x + self.mixer.step(self.input_layernorm(x), positions, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


@dataclass
class LMOutput:
    """``logits`` ``(B, L, V)``; ``hidden_states``: ``num_layers + 1`` tensors ``(B, L, D)`` (each layer's
    input, then the last layer's output, before the final norm) when requested, else ``None``."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


class ThinkfastLM(nn.Module):
    """Causal LM: embeddings, ``num_layers`` :class:`Block` s, final RMSNorm, LM head (tied or not).

    Construct with random weights (``Linear``/``Embedding`` ~ N(0, 0.02), SSM parameters as Mamba-2) on any
    ``device``/``dtype``; ``device="meta"`` allocates nothing (for parameter counts).
    """

    def __init__(self, config: ModelConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, kernels: Kernels | None = None):
        super().__init__()
        self.config = config
        self.fused_multiple: int | None = None  # see fuse_projections
        self.compiled_pointwise = False  # see compile_pointwise
        kw = {"device": device, "dtype": dtype}
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, **kw)
        self.layers = nn.ModuleList(Block(config, i, **kw) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False, **kw)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self._init_dense_weights()
        self.set_kernels(kernels or Kernels.reference())

    @torch.no_grad()
    def _init_dense_weights(self, std: float = 0.02) -> None:
        if self.embed_tokens.weight.device.type == "meta":
            return
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()

    # --- kernels ---------------------------------------------------------------------------
    def set_kernels(self, kernels: Kernels) -> ThinkfastLM:
        """Use ``kernels`` (see :func:`thinkfast.kernels.select_kernels`) in every mixer; returns ``self``."""
        self.kernels = kernels
        for block in self.layers:
            block.mixer.kernels = kernels
        return self

    # --- fused projections -----------------------------------------------------------------
    def fuse_projections(self, multiple: int | None = None) -> ThinkfastLM:
        """Inference speed-up, same values: ``prefill`` and ``step`` compute each attention mixer's
        ``q``/``k``/``v`` as one GEMM and each SSM mixer's ``in_proj`` with its output padded to ``multiple``
        columns (default 8 on CUDA, where cuBLAS needs aligned rows, else 1), with gradients off
        (:mod:`thinkfast.models.fused`). Parameters keep their names and identities (they become views of the
        fused matrices). Fusions still current are kept, stale ones (a parameter given new storage) redone;
        ``.to()``, ``load_state_dict`` and every eager ``prefill`` and ``step`` check. Returns ``self``."""
        if multiple is None:
            multiple = 8 if self.embed_tokens.weight.is_cuda else 1
        for block in self.layers:
            block.mixer.fuse_projections(multiple)
        self.fused_multiple = multiple
        return self

    def unfuse_projections(self) -> ThinkfastLM:
        """Back to one GEMM per linear (the parameters stay where they are). Returns ``self``."""
        for block in self.layers:
            block.mixer.unfuse_projections()
        self.fused_multiple = None
        return self

    def compile_pointwise(self, enabled: bool = True) -> ThinkfastLM:
        """Inference speed-up, same math: a large ``prefill`` (at least
        :data:`~thinkfast.models.pointwise.MIN_PREFILL_ELEMENTS` tokens x hidden size) runs its elementwise
        work (RMSNorms, the SwiGLU and SSM gates, rotary embeddings) as ``torch.compile`` kernels on CUDA
        with gradients off, each compiled at its first use (:mod:`thinkfast.models.pointwise`); off (the
        default), eagerly. ``step`` is unaffected (the engine compiles the whole step). Returns ``self``."""
        self.compiled_pointwise = enabled
        return self

    def warm_pointwise(self, cache: InferenceCache, prompts: int, length: int) -> bool:
        """Compile the prefill's pointwise kernels before they are timed: if a prefill of ``prompts`` x
        ``length`` tokens runs them compiled (:meth:`compile_pointwise` on and large enough; on CUDA, where
        the callers use this), run one such prefill (all tokens 1) into the cache's first ``prompts``
        slots (whose contents the next prefill there overwrites). Returns whether it ran."""
        if not self._compiles_pointwise(prompts * length):
            return False
        device = self.embed_tokens.weight.device
        ids = torch.ones(prompts, length, dtype=torch.long, device=device)  # any tokens; no RNG drawn
        with torch.no_grad():
            self.prefill(ids, cache, torch.arange(prompts, device=device)[:, None])
        return True

    def _compiles_pointwise(self, tokens: int) -> bool:
        """Whether a prefill of ``tokens`` prompt tokens (padding included) runs its pointwise work compiled
        (on CUDA; see :meth:`compile_pointwise`)."""
        return (getattr(self, "compiled_pointwise", False)
                and tokens * self.config.hidden_size >= pointwise.MIN_PREFILL_ELEMENTS)

    def _keep_fusion_current(self) -> None:
        """Redo any fusion that a parameter given new storage left stale (host-side pointer checks, a few
        microseconds per layer; skipped while torch.compile traces, whose callers fused just before)."""
        multiple = getattr(self, "fused_multiple", None)
        if multiple is not None and not torch.compiler.is_compiling():
            self.fuse_projections(multiple)

    def _after_storage_change(self, change):
        """Run ``change()`` (which may give parameters new storage), then redo any fusion it left stale."""
        try:
            return change()
        finally:
            self._keep_fusion_current()

    def _apply(self, fn, recurse=True):
        return self._after_storage_change(lambda: super(ThinkfastLM, self)._apply(fn, recurse))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self._after_storage_change(
            lambda: super(ThinkfastLM, self).load_state_dict(state_dict, strict, assign))

    # --- training / scoring ----------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, doc_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False) -> LMOutput:
        """``input_ids`` ``(B, L)`` long; ``doc_ids`` ``(B, L)`` long marks packed documents (no attention
        or state crosses a change of id, and RoPE positions restart at 0 in each document, so a packed row
        gives the same logits as its documents run one by one)."""
        seq_idx = segment_index(doc_ids)
        if seq_idx is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        else:
            positions = document_positions(seq_idx)
        x = self.embed_tokens(input_ids)
        hidden = [x] if output_hidden_states else None
        for block in self.layers:
            x = block(x, position_ids=positions, seq_idx=seq_idx)
            if hidden is not None:
                hidden.append(x)
        logits = self.lm_head(self.norm(x))
        return LMOutput(logits=logits, hidden_states=tuple(hidden) if hidden is not None else None)

    # --- inference -------------------------------------------------------------------------
    def allocate_cache(self, batch_size: int, max_seqlen: int, *, dtype: torch.dtype | None = None,
                       state_dtype: torch.dtype | None = None,
                       device: torch.device | str | None = None) -> InferenceCache:
        """Per-layer caches for ``batch_size`` slots of ``max_seqlen`` tokens.

        ``dtype`` (KV cache and conv state) defaults to the model's; ``state_dtype`` (SSM state) defaults to
        float32 (float64 for a float64 model).
        """
        param = self.embed_tokens.weight
        dtype = dtype or param.dtype
        state_dtype = state_dtype or (torch.float64 if param.dtype == torch.float64 else torch.float32)
        device = torch.device(device) if device is not None else param.device
        layers = [block.mixer.allocate_cache(batch_size, max_seqlen, dtype=dtype, state_dtype=state_dtype,
                                             device=device) for block in self.layers]
        return InferenceCache(layers=layers, batch_size=batch_size, max_seqlen=max_seqlen)

    def prefill(self, prompt_ids: torch.Tensor, cache: InferenceCache, slots: torch.Tensor,
                rows: torch.Tensor | None = None, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Run prompts once and store each prompt's state (KV, conv, SSM) in its cache slots.

        Three forms, one forward over all prompts in each:

        - one prompt ``prompt_ids (L,)``, ``slots (n,)`` -> next-token logits ``(n, V)`` (the same row ``n``
          times);
        - a batch ``prompt_ids (P, L)``, ``slots (P, n)`` (prompt ``p`` fills ``slots[p, :]``) -> ``(P, n, V)``;
        - a batch ``prompt_ids (P, L)``, ``slots (S,)`` and ``rows (S,)`` (slot ``slots[i]`` takes prompt
          ``rows[i]``; any number of slots per prompt) -> ``(S, V)``.

        ``lengths (P,)`` long marks left-padded prompts: prompt ``p`` is the last ``lengths[p]`` tokens of
        its row. Padding and prompt are separate documents (no attention or state crosses, RoPE positions
        start at 0 at the prompt), so each prompt gets the state and logits it would get alone, and its
        keys/values land at cache positions ``0 .. lengths[p] - 1``. ``None``: every prompt is ``L`` long.
        """
        self._keep_fusion_current()
        prompts = prompt_ids[None] if prompt_ids.ndim == 1 else prompt_ids  # (P, L)
        num_prompts, length = prompts.shape
        grid = slots.ndim == 2
        if grid:
            if slots.shape[0] != num_prompts:
                raise ValueError(f"slots {tuple(slots.shape)} needs one row per prompt ({num_prompts})")
            rows = torch.arange(num_prompts, device=slots.device).repeat_interleave(slots.shape[1])
            slots = slots.reshape(-1)
        elif rows is None and num_prompts != 1:
            raise ValueError("a batch of prompts with 1-D slots needs rows (the prompt of each slot)")
        seq_idx = positions = None
        if lengths is not None:
            doc_ids = torch.arange(length, device=prompts.device) >= (length - lengths.to(prompts.device))[:, None]
            seq_idx = segment_index(doc_ids.long())
            positions = document_positions(seq_idx)
        x = self.embed_tokens(prompts)
        with pointwise.compiled(self._compiles_pointwise(prompts.numel())):
            for block, layer_cache in zip(self.layers, cache.layers, strict=True):
                x = block.prefill(x, layer_cache, slots, rows, seq_idx, positions)
        last = self.lm_head(self.norm(x[:, -1]))  # (P, V)
        logits = last.expand(slots.shape[0], -1) if rows is None else last[rows]  # (S, V)
        return logits.view(num_prompts, -1, logits.shape[-1]) if grid else logits

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """Decode one token per slot: ``tokens`` ``(B,)`` at ``positions`` ``(B,)`` -> logits ``(B, V)``.

        Fixed shapes and no host synchronisation, so it can be captured in a CUDA graph.
        """
        self._keep_fusion_current()
        x = self.embed_tokens(tokens)
        for block, layer_cache in zip(self.layers, cache.layers, strict=True):
            x = block.step(x, positions, layer_cache)
        return self.lm_head(self.norm(x))

    def num_parameters(self) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())
