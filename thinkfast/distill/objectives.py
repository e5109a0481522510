"""What each stage minimises, given a packed batch and the teacher's outputs on it.

A stage's loss is split in two halves so that only the student runs inside the (possibly
DDP/FSDP-wrapped) training module:

- :func:`teacher_targets` runs the frozen teacher under ``no_grad`` and returns what the
  student must match (logits, hidden states, attention matrices);
- :class:`StageObjective` (an ``nn.Module`` around the student) returns the *sum* of per-item
  losses, and :meth:`StageObjective.count` the number of items, known before the forward pass.
  The trainer divides by the total count of the optimizer step (all micro-batches, all
  processes), so every reported loss is the mean over the step's items, whose unit is stated
  below.

==========  ===========================================================  =========================
stage       per-item loss                                                item
==========  ===========================================================  =========================
``matrix``  ``||S - A||_F`` of the student's SSM mixing matrix vs the     (sequence, head, layer)
            teacher's attention probabilities, same normed input
``hidden``  ``||s - t||_2`` of student layer i's output vs the teacher's  (loss token, layer)
            (block output, or mixer output), both given the teacher's
            input to layer i
``kd``      ``T^2 * KL_T + ce_weight * CE`` on next-token distributions   loss token
``sft``     cross-entropy of the next token                              loss token
==========  ===========================================================  =========================

Loss tokens are the positions whose *next* token is a target (see
:func:`thinkfast.data.packing.next_token_targets`); for ``hidden`` and ``matrix`` the token
itself must be a target (with ``loss_on = "all"``: every non-padding token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from thinkfast.data.packing import next_token_targets
from thinkfast.distill.config import StageSection
from thinkfast.distill.losses import cross_entropy, hidden_loss, kl_divergence, matrix_loss
from thinkfast.models.model import document_positions, segment_index


@dataclass
class Batch:
    """A packed micro-batch on the training device: ``(B, L)`` tensors."""

    input_ids: Tensor  # long
    doc_ids: Tensor  # long, non-decreasing along each row
    loss_mask: Tensor  # bool

    @property
    def num_tokens(self) -> int:
        return self.input_ids.numel()


def packed_positions(batch: Batch) -> tuple[Tensor, Tensor]:
    """``(positions, seq_idx)``, both ``(B, L)``, as the model's forward derives them from ``doc_ids``:
    the segment index of each token and its position inside its own document."""
    seq_idx = segment_index(batch.doc_ids)
    return document_positions(seq_idx), seq_idx


def block_norm(block: nn.Module) -> nn.Module:
    """The norm a block applies before its mixer."""
    for name in ("input_layernorm", "input_norm"):
        module = getattr(block, name, None)
        if isinstance(module, nn.Module):
            return module
    raise AttributeError(f"{type(block).__name__} has no pre-mixer norm attribute")


def aligned_layers(stage: StageSection, student: nn.Module) -> list[int]:
    """Layers a ``matrix``/``hidden`` stage aligns: the stage's ``layers``, else every layer that trains.

    For ``matrix``, only layers whose student mixer exposes ``mixing_matrix`` (SSM layers) count.
    """
    layers = stage.layers or [i for i, block in enumerate(student.layers)
                              if any(p.requires_grad for p in block.parameters())]
    if stage.kind == "matrix":
        layers = [i for i in layers if hasattr(student.layers[i].mixer, "mixing_matrix")]
    return layers


@torch.no_grad()
def teacher_targets(stage: StageSection, teacher: nn.Module, batch: Batch, layers: list[int]) -> dict[str, Any]:
    """The frozen teacher's outputs that ``stage`` aligns the student to (no gradient)."""
    if stage.kind == "sft":
        return {}
    if stage.kind == "kd":
        logits = teacher(batch.input_ids, doc_ids=batch.doc_ids).logits
        _, mask = next_token_targets(batch.input_ids, batch.doc_ids, batch.loss_mask)
        return {"logits": logits[:, :-1][mask]}  # (N, V): only the loss tokens are kept
    hidden = teacher(batch.input_ids, doc_ids=batch.doc_ids, output_hidden_states=True).hidden_states
    positions, seq_idx = packed_positions(batch)
    targets: dict[str, Any] = {"inputs": {i: hidden[i] for i in layers}}
    if stage.kind == "hidden":
        if stage.hidden_target == "block":
            targets["outputs"] = {i: hidden[i + 1] for i in layers}
        else:
            targets["outputs"] = {
                i: teacher.layers[i].mixer(block_norm(teacher.layers[i])(hidden[i]), seq_idx, positions)
                for i in layers}
        return targets
    targets["normed"] = {i: block_norm(teacher.layers[i])(hidden[i]) for i in layers}
    targets["matrices"] = {i: teacher.layers[i].mixer.attention_matrix(targets["normed"][i], seq_idx, positions)
                           for i in layers}
    return targets


class StageObjective(nn.Module):
    """The student plus one stage's loss: ``forward(batch, targets) -> loss_sum`` (float32 scalar)."""

    def __init__(self, student: nn.Module, stage: StageSection, layers: list[int]):
        super().__init__()
        self.student = student
        self.stage = stage
        self.layers = layers

    def count(self, batch: Batch) -> int:
        """Number of loss items in ``batch`` (see the module docstring)."""
        kind = self.stage.kind
        if kind in ("kd", "sft"):
            return int(next_token_targets(batch.input_ids, batch.doc_ids, batch.loss_mask)[1].sum())
        if kind == "hidden":
            return int(batch.loss_mask.sum()) * len(self.layers)
        heads = sum(self.student.layers[i].mixer.cfg.num_heads for i in self.layers)
        return batch.input_ids.shape[0] * heads

    def forward(self, batch: Batch, targets: dict[str, Any]) -> Tensor:
        kind = self.stage.kind
        if kind in ("kd", "sft"):
            return self._logit_loss(batch, targets)
        if kind == "hidden":
            return self._hidden_loss(batch, targets)
        return self._matrix_loss(batch, targets)

    def _logit_loss(self, batch: Batch, targets: dict[str, Any]) -> Tensor:
        stage = self.stage
        logits = self.student(batch.input_ids, doc_ids=batch.doc_ids).logits
        next_ids, mask = next_token_targets(batch.input_ids, batch.doc_ids, batch.loss_mask)
        student = logits[:, :-1][mask]  # (N, V)
        labels = next_ids[mask]  # (N,)
        if stage.kind == "sft":
            return cross_entropy(student, labels, chunk_size=stage.vocab_chunk).sum()
        per_token = stage.temperature**2 * kl_divergence(
            student, targets["logits"], temperature=stage.temperature, direction=stage.kl_direction,
            chunk_size=stage.vocab_chunk)
        if stage.ce_weight:
            per_token = per_token + stage.ce_weight * cross_entropy(student, labels, chunk_size=stage.vocab_chunk)
        return per_token.sum()

    def _hidden_loss(self, batch: Batch, targets: dict[str, Any]) -> Tensor:
        positions, seq_idx = packed_positions(batch)
        mask = batch.loss_mask
        total = torch.zeros((), dtype=torch.float32, device=batch.input_ids.device)
        for i in self.layers:
            block = self.student.layers[i]
            x = targets["inputs"][i]
            if self.stage.hidden_target == "block":
                out = block(x, position_ids=positions, seq_idx=seq_idx)
            else:
                out = block.mixer(block_norm(block)(x), seq_idx, positions)
            total = total + hidden_loss(out[mask], targets["outputs"][i][mask]).sum()
        return total

    def _matrix_loss(self, batch: Batch, targets: dict[str, Any]) -> Tensor:
        seq_idx = segment_index(batch.doc_ids)
        valid = batch.loss_mask[:, None, :, None] & batch.loss_mask[:, None, None, :]  # (B, 1, L, L)
        total = torch.zeros((), dtype=torch.float32, device=batch.input_ids.device)
        for i in self.layers:
            mixer = self.student.layers[i].mixer
            student = mixer.mixing_matrix(targets["normed"][i], seq_idx)  # (B, H, L, L)
            teacher = targets["matrices"][i]
            if student.shape != teacher.shape:
                raise ValueError(f"layer {i}: student mixing matrix {tuple(student.shape)} and teacher attention "
                                 f"matrix {tuple(teacher.shape)} differ; the student needs one SSM head per "
                                 f"attention head")
            zero = torch.zeros((), dtype=student.dtype, device=student.device)
            total = total + matrix_loss(torch.where(valid, student, zero), torch.where(valid, teacher, zero)).sum()
        return total
