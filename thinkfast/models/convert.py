"""Initialising a student from its teacher: copied weights and the attention -> SSM mapping (MambaInLlama)."""

from __future__ import annotations

import torch

from thinkfast.models.attention import Attention
from thinkfast.models.config import ModelConfig
from thinkfast.models.model import ThinkfastLM
from thinkfast.models.ssm import SSMMixer


def new_student(teacher: ThinkfastLM, config: ModelConfig) -> ThinkfastLM:
    """A model of ``config`` on the teacher's device and dtype, sharing nothing with it, with the teacher's
    embeddings, norms, MLPs, LM head and every attention layer the student keeps copied in; SSM mixers keep
    their fresh (Mamba-2 default) initialisation."""
    param = teacher.embed_tokens.weight
    student = ThinkfastLM(config, device=param.device, dtype=param.dtype, kernels=teacher.kernels)
    copy_shared_weights(teacher, student)
    return student


@torch.no_grad()
def copy_shared_weights(teacher: ThinkfastLM, student: ThinkfastLM) -> None:
    """Copy everything but the SSM mixers from ``teacher`` into ``student`` (same widths and layer count)."""
    if teacher.config.num_layers != student.config.num_layers:
        raise ValueError("teacher and student must have the same number of layers")
    student.embed_tokens.weight.copy_(teacher.embed_tokens.weight)
    student.norm.weight.copy_(teacher.norm.weight)
    if not student.config.tie_embeddings:
        student.lm_head.weight.copy_(teacher.lm_head.weight)
    for t_block, s_block in zip(teacher.layers, student.layers, strict=True):
        s_block.input_layernorm.load_state_dict(t_block.input_layernorm.state_dict())
        s_block.post_attention_layernorm.load_state_dict(t_block.post_attention_layernorm.state_dict())
        s_block.mlp.load_state_dict(t_block.mlp.state_dict())
        if s_block.kind == "attention":
            if t_block.kind != "attention":
                raise ValueError(f"layer {s_block.layer_idx}: the student keeps attention but the teacher has none")
            s_block.mixer.load_state_dict(t_block.mixer.state_dict())


@torch.no_grad()
def copy_heads(target: torch.Tensor, source: torch.Tensor, target_heads: int, source_heads: int,
               dim: int = 0) -> None:
    """Copy per-head slices of ``source`` into ``target`` along ``dim`` (rows of a projection's weight).

    ``target`` has ``target_heads`` slices of ``t = size / target_heads``, ``source`` has ``source_heads``
    slices of ``s``. Target head ``h`` takes source head ``h * source_heads // target_heads`` (GQA-style
    repetition when there are more target heads, every k-th head when fewer) and its first ``min(t, s)``
    entries; the rest of the target is left as it was.
    """
    t_size, s_size = target.shape[dim] // target_heads, source.shape[dim] // source_heads
    n = min(t_size, s_size)
    for h in range(target_heads):
        src = h * source_heads // target_heads
        target.narrow(dim, h * t_size, n).copy_(source.narrow(dim, src * s_size, n))


@torch.no_grad()
def init_ssm_from_attention(ssm: SSMMixer, attn: Attention) -> None:
    """MambaInLlama initialisation: ``C <- W_q``, ``B <- W_k``, ``x <- W_v``, ``out_proj <- W_o``.

    Heads are matched with :func:`copy_heads` (so ``x`` and ``B`` at KV-head size are repeated to every
    head GQA-style when the mixer is shaped that way); ``z`` and ``dt`` rows of ``in_proj``, the conv,
    ``A_log``, ``dt_bias`` and ``D`` keep their own initialisation. Biases are copied when both have them.
    """
    s = ssm.cfg
    rows = ssm.in_proj_slices()
    w = ssm.in_proj.weight
    copy_heads(w[rows["C"]], attn.q_proj.weight, s.num_c_groups, attn.num_heads)
    copy_heads(w[rows["B"]], attn.k_proj.weight, s.num_b_groups, attn.num_kv_heads)
    copy_heads(w[rows["x"]], attn.v_proj.weight, s.num_x_heads, attn.num_kv_heads)
    copy_heads(ssm.out_proj.weight, attn.o_proj.weight, s.num_heads, attn.num_heads, dim=1)
    if ssm.in_proj.bias is not None and attn.q_proj.bias is not None:
        b = ssm.in_proj.bias
        copy_heads(b[rows["C"]], attn.q_proj.bias, s.num_c_groups, attn.num_heads)
        copy_heads(b[rows["B"]], attn.k_proj.bias, s.num_b_groups, attn.num_kv_heads)
        copy_heads(b[rows["x"]], attn.v_proj.bias, s.num_x_heads, attn.num_kv_heads)
    if ssm.out_proj.bias is not None and attn.o_proj.bias is not None:
        ssm.out_proj.bias.copy_(attn.o_proj.bias)


def evenly_spaced_layers(num_layers: int, fraction: float) -> list[int]:
    """``round(fraction * num_layers)`` layer indices spread evenly, starting at 0 (``0.25`` of 16: 0, 4, 8, 12)."""
    count = round(fraction * num_layers)
    return sorted({i * num_layers // count for i in range(count)}) if count else []
