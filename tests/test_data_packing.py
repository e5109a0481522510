"""Packing into fixed-length rows with document ids, and the resumable loader (thinkfast.data.packing)."""

from __future__ import annotations

import random

import pytest
import torch

from thinkfast.data.packing import PackedLoader, next_token_targets, pack
from thinkfast.errors import DataError

PAD = 0


def make_examples(n: int, seed: int = 0, max_len: int = 40) -> list[tuple[list[int], list[bool]]]:
    """Examples whose tokens are all ``100 + i`` (i = example index): a token tells its document."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(3, max_len)
        prompt = rng.randint(1, length - 1)
        out.append(([100 + i] * length, [False] * prompt + [True] * (length - prompt)))
    return out


def documents_in(batch) -> list[tuple[int, int, int]]:
    """(example index, length, targets) of every document segment found in a packed batch."""
    found = []
    for r in range(batch.input_ids.shape[0]):
        ids, docs, mask = batch.input_ids[r], batch.doc_ids[r], batch.loss_mask[r]
        for d in docs.unique().tolist():
            sel = docs == d
            tokens = ids[sel].unique().tolist()
            if tokens == [PAD]:
                continue
            assert len(tokens) == 1, f"doc id {d} in row {r} mixes examples {tokens}"
            found.append((tokens[0] - 100, int(sel.sum()), int(mask[sel].sum())))
    return found


def test_pack_keeps_every_example_whole_and_separate():
    examples = make_examples(50)
    batch = pack(examples, seq_len=64, pad_id=PAD, seed=1)
    assert batch.input_ids.shape == batch.doc_ids.shape == batch.loss_mask.shape
    assert batch.input_ids.shape[1] == 64
    assert batch.input_ids.dtype == torch.long and batch.loss_mask.dtype == torch.bool
    found = sorted(documents_in(batch))
    assert [f[0] for f in found] == list(range(50))
    for index, length, targets in found:
        assert length == len(examples[index][0])
        assert targets == sum(examples[index][1])
    # fewer rows than one example per row: packing actually packs
    assert batch.input_ids.shape[0] < 50


def test_doc_ids_non_decreasing_padding_own_id_and_no_loss():
    batch = pack(make_examples(30), seq_len=50, pad_id=PAD, seed=0)
    assert (batch.doc_ids[:, 1:] >= batch.doc_ids[:, :-1]).all()
    assert (batch.doc_ids[:, 0] == 0).all()
    pad = batch.input_ids == PAD
    assert pad.any()
    assert not batch.loss_mask[pad].any()
    for r in range(batch.doc_ids.shape[0]):
        if pad[r].any():
            pad_ids = batch.doc_ids[r][pad[r]].unique()
            assert pad_ids.numel() == 1
            assert not (batch.doc_ids[r][~pad[r]] == pad_ids[0]).any()


def test_long_example_is_truncated_to_one_row():
    examples = [([5] * 10, [True] * 10), ([7] * 100, [False] * 50 + [True] * 50)]
    batch = pack(examples, seq_len=32, pad_id=PAD, shuffle=False)
    assert batch.input_ids.shape == (2, 32)
    assert (batch.input_ids[1] == 7).all()
    assert batch.loss_mask[1].sum() == 0  # the first 32 tokens of the long one are its prompt


def test_shuffle_is_seeded_and_deterministic():
    examples = make_examples(40)
    a = pack(examples, 64, PAD, seed=3)
    b = pack(examples, 64, PAD, seed=3)
    c = pack(examples, 64, PAD, seed=4)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.doc_ids, b.doc_ids)
    assert a.input_ids.shape != c.input_ids.shape or not torch.equal(a.input_ids, c.input_ids)


def test_next_token_targets_never_cross_documents():
    examples = [([1, 2, 3], [False, True, True]), ([4, 5, 6, 7], [False, False, True, True])]
    batch = pack(examples, seq_len=10, pad_id=PAD, shuffle=False)
    targets, mask = next_token_targets(batch.input_ids, batch.doc_ids, batch.loss_mask)
    assert targets.shape == mask.shape == (1, 9)
    assert targets[0][mask[0]].tolist() == [2, 3, 6, 7]
    # with every token a target, the first token of document 2 is still not predicted from document 1
    all_mask = torch.ones_like(batch.loss_mask)
    _, mask_all = next_token_targets(batch.input_ids, batch.doc_ids, all_mask)
    assert not mask_all[0, 2]  # position 2 (token 3) -> token 4 crosses the boundary


def test_loader_covers_each_epoch_once_and_continues_across_epochs():
    examples = make_examples(23, max_len=20)
    loader = PackedLoader(examples, seq_len=32, batch_size=3, pad_id=PAD, seed=0)
    rows_epoch0 = loader.rows_per_epoch
    seen: list[int] = []
    while loader.epoch == 0:
        batch = next(loader)
        assert batch.input_ids.shape == (3, 32)
        seen.extend(f[0] for f in documents_in(batch))
    # everything from epoch 0 is seen once; the last batch may run into epoch 1
    assert sorted(seen[: len(examples)]) == list(range(len(examples)))
    assert rows_epoch0 >= 1


def test_loader_resume_gives_identical_batches():
    examples = make_examples(31)
    full = PackedLoader(examples, seq_len=48, batch_size=2, pad_id=PAD, seed=5)
    reference = [next(full) for _ in range(25)]
    first = PackedLoader(examples, seq_len=48, batch_size=2, pad_id=PAD, seed=5)
    for _ in range(11):
        next(first)
    state = first.state_dict()
    resumed = PackedLoader(examples, seq_len=48, batch_size=2, pad_id=PAD, seed=5)
    resumed.load_state_dict(state)
    for expected in reference[11:]:
        got = next(resumed)
        assert torch.equal(got.input_ids, expected.input_ids)
        assert torch.equal(got.doc_ids, expected.doc_ids)
        assert torch.equal(got.loss_mask, expected.loss_mask)


def _longer_first(examples):
    (ids, mask), *rest = examples
    return [([ids[0]] * (len(ids) + 1), [*mask, True]), *rest]


@pytest.mark.parametrize("change, key, saved, now", [
    (lambda ex: PackedLoader(ex, 64, 2, PAD, seed=5), "seq_len", 48, 64),
    (lambda ex: PackedLoader(ex, 48, 3, PAD, seed=5), "batch_size", 2, 3),
    (lambda ex: PackedLoader(ex, 48, 2, PAD, seed=6), "seed", 5, 6),
    # the data file changed under the run: an example fewer, or one of them longer
    (lambda ex: PackedLoader(ex[:-1], 48, 2, PAD, seed=5), "num_examples", 10, 9),
    (lambda ex: PackedLoader(_longer_first(ex), 48, 2, PAD, seed=5), "num_tokens", None, None),
], ids=["seq_len", "batch_size", "seed", "fewer-examples", "longer-example"])
def test_loader_resume_refuses_changed_settings_and_data(change, key, saved, now):
    examples = make_examples(10)
    saving = PackedLoader(examples, 48, 2, PAD, seed=5)
    for _ in range(2):
        next(saving)
    state = saving.state_dict()
    assert state["row"] > 0
    other = change(examples)
    if saved is None:
        saved, now = state[key], other.state_dict()[key]
        assert now == saved + 1
    with pytest.raises(DataError, match=rf"cannot resume the data stream: saved {key}={saved} but this run has "
                                        rf"{key}={now}"):
        other.load_state_dict(state)
    assert (other.epoch, other.row) == (0, 0)  # the position was not taken over


def test_loader_ranks_partition_each_global_batch():
    examples = make_examples(40)
    single = PackedLoader(examples, 48, batch_size=4, pad_id=PAD, seed=2)
    r0 = PackedLoader(examples, 48, batch_size=2, pad_id=PAD, seed=2, rank=0, world_size=2)
    r1 = PackedLoader(examples, 48, batch_size=2, pad_id=PAD, seed=2, rank=1, world_size=2)
    for _ in range(5):
        whole = next(single)
        both = torch.cat([next(r0).input_ids, next(r1).input_ids])
        assert torch.equal(whole.input_ids, both)
