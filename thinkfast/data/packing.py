"""Packing tokenised examples into fixed-length rows with document ids, and a resumable loader.

Rows are filled greedily in a seeded order: an example goes into the current row if it fits,
otherwise the row is padded and a new one starts. An example longer than ``seq_len`` is cut to
``seq_len`` tokens and fills a row by itself. Examples are never split across rows, so no row
holds a document without its beginning (its prompt).

A packed batch is three ``(N, L)`` tensors:

- ``input_ids`` (long): token ids; padding is ``pad_id``.
- ``doc_ids`` (long): within each row, documents are numbered 0, 1, 2, ... in order and the
  padding at the end of the row gets the next number, so ids are non-decreasing along a row
  (the form ``seq_idx`` of the mamba_ssm kernels needs). Neither attention nor SSM state may
  cross a change of id.
- ``loss_mask`` (bool): True where the token is a training target (the response and its EOS);
  always False on padding.

Use :func:`next_token_targets` for the shifted targets and mask, which also drops the
prediction of a document's first token from the previous document's last.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from thinkfast.errors import DataError


@dataclass
class PackedBatch:
    """``input_ids``, ``doc_ids``: ``(N, L)`` long; ``loss_mask``: ``(N, L)`` bool."""

    input_ids: torch.Tensor
    doc_ids: torch.Tensor
    loss_mask: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "doc_ids": self.doc_ids, "loss_mask": self.loss_mask}

    @property
    def num_target_tokens(self) -> int:
        """Tokens that carry the loss."""
        return int(self.loss_mask.sum())


class TokenizedCorpus:
    """Tokenised examples stored flat (int32 ids + bool mask + offsets), compact for millions of tokens."""

    def __init__(self, examples: Sequence[tuple[Sequence[int], Sequence[bool]]]):
        lengths = np.array([len(ids) for ids, _ in examples], dtype=np.int64)
        for i, (ids, mask) in enumerate(examples):
            if len(ids) != len(mask):
                raise ValueError(f"example {i}: {len(ids)} token ids but {len(mask)} loss-mask entries")
            if len(ids) == 0:
                raise ValueError(f"example {i} is empty")
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.tokens = np.fromiter((t for ids, _ in examples for t in ids), dtype=np.int64, count=int(lengths.sum()))
        self.mask = np.fromiter((bool(m) for _, mask in examples for m in mask), dtype=bool, count=int(lengths.sum()))
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids ``(len,)`` and loss mask ``(len,)`` of example ``index``."""
        lo, hi = self.offsets[index], self.offsets[index + 1]
        return self.tokens[lo:hi], self.mask[lo:hi]


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """Example order for one epoch: a permutation seeded by ``(seed, epoch)``, or 0..n-1 unshuffled."""
    order = list(range(num_examples))
    if shuffle:
        random.Random(f"thinkfast-packing/{seed}/{epoch}").shuffle(order)
    return order


def plan_rows(lengths: Sequence[int], order: Sequence[int], seq_len: int) -> list[list[int]]:
    """Greedy packing plan: for each row, the example indices it holds, in order."""
    rows: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index in order:
        n = min(int(lengths[index]), seq_len)
        if current and used + n > seq_len:
            rows.append(current)
            current, used = [], 0
        current.append(index)
        used += n
    if current:
        rows.append(current)
    return rows


def build_rows(corpus: TokenizedCorpus, rows: Sequence[Sequence[int]], seq_len: int, pad_id: int) -> PackedBatch:
    """Materialise planned rows into a :class:`PackedBatch` of shape ``(len(rows), seq_len)``."""
    n = len(rows)
    input_ids = np.full((n, seq_len), pad_id, dtype=np.int64)
    doc_ids = np.zeros((n, seq_len), dtype=np.int64)
    loss_mask = np.zeros((n, seq_len), dtype=bool)
    for r, row in enumerate(rows):
        pos = 0
        for doc, index in enumerate(row):
            ids, mask = corpus.example(index)
            k = min(len(ids), seq_len - pos)
            input_ids[r, pos : pos + k] = ids[:k]
            loss_mask[r, pos : pos + k] = mask[:k]
            doc_ids[r, pos : pos + k] = doc
            pos += k
        doc_ids[r, pos:] = len(row)
    return PackedBatch(torch.from_numpy(input_ids), torch.from_numpy(doc_ids), torch.from_numpy(loss_mask))


def pack(examples: Sequence[tuple[Sequence[int], Sequence[bool]]], seq_len: int, pad_id: int, seed: int = 0,
         shuffle: bool = True) -> PackedBatch:
    """Pack every example once (one epoch) into ``(N, seq_len)`` rows."""
    corpus = TokenizedCorpus(examples)
    rows = plan_rows(corpus.lengths, epoch_order(len(corpus), seed, 0, shuffle), seq_len)
    return build_rows(corpus, rows, seq_len, pad_id)


def next_token_targets(input_ids: torch.Tensor, doc_ids: torch.Tensor,
                       loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted targets ``(N, L-1)`` and their mask ``(N, L-1)`` for next-token losses.

    Position ``t`` predicts ``input_ids[:, t + 1]``; it counts when that token is a target and
    belongs to the same document as position ``t``. Logits to pair with them: ``logits[:, :-1]``.
    """
    targets = input_ids[:, 1:]
    mask = loss_mask[:, 1:] & (doc_ids[:, 1:] == doc_ids[:, :-1])
    return targets, mask


class PackedLoader:
    """An endless, deterministic, resumable stream of packed batches.

    Epoch ``e`` packs every example in the order :func:`epoch_order` ``(seed, e)`` gives; a step
    takes ``batch_size * world_size`` consecutive rows (continuing into the next epoch when one
    runs out) and this process keeps rows ``rank * batch_size .. (rank + 1) * batch_size``.
    :meth:`state_dict` is the position (epoch, row); loading it continues exactly where a saved
    run stopped.
    """

    def __init__(self, examples: Sequence[tuple[Sequence[int], Sequence[bool]]] | TokenizedCorpus, seq_len: int,
                 batch_size: int, pad_id: int, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.corpus = examples if isinstance(examples, TokenizedCorpus) else TokenizedCorpus(examples)
        if len(self.corpus) == 0:
            raise DataError("no training examples to pack: the dataset selection is empty")
        self.seq_len, self.batch_size, self.pad_id = seq_len, batch_size, pad_id
        self.seed, self.shuffle, self.rank, self.world_size = seed, shuffle, rank, world_size
        self.epoch, self.row = 0, 0
        self._plan_epoch: int | None = None
        self._plan: list[list[int]] = []

    def _rows_of(self, epoch: int) -> list[list[int]]:
        if self._plan_epoch != epoch:
            order = epoch_order(len(self.corpus), self.seed, epoch, self.shuffle)
            self._plan = plan_rows(self.corpus.lengths, order, self.seq_len)
            self._plan_epoch = epoch
        return self._plan

    @property
    def rows_per_epoch(self) -> int:
        """Rows in the current epoch (it varies slightly between epochs with the order)."""
        return len(self._rows_of(self.epoch))

    def __iter__(self) -> Iterator[PackedBatch]:
        return self

    def __next__(self) -> PackedBatch:
        taken: list[list[int]] = []
        need = self.batch_size * self.world_size
        while len(taken) < need:
            plan = self._rows_of(self.epoch)
            chunk = plan[self.row : self.row + need - len(taken)]
            taken.extend(chunk)
            self.row += len(chunk)
            if self.row >= len(plan):
                self.epoch, self.row = self.epoch + 1, 0
        mine = taken[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        return build_rows(self.corpus, mine, self.seq_len, self.pad_id)

    def state_dict(self) -> dict[str, Any]:
        """The stream position plus what must match on resume."""
        return {"epoch": self.epoch, "row": self.row, "seed": self.seed, "seq_len": self.seq_len,
                "batch_size": self.batch_size, "world_size": self.world_size,
                "num_examples": len(self.corpus), "num_tokens": self.corpus.num_tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; the data and packing settings must be the same."""
        for key in ("seed", "seq_len", "batch_size", "world_size", "num_examples", "num_tokens"):
            current = self.state_dict()[key]
            if state.get(key) != current:
                raise DataError(f"cannot resume the data stream: saved {key}={state.get(key)!r} "
                                 f"but this run has {key}={current!r}; resume with the recipe the "
                                 f"checkpoint was written with")
        self.epoch, self.row = int(state["epoch"]), int(state["row"])
