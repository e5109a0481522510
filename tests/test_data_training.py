"""Training examples from dataset specs (reference solutions or teacher samples), packed for a real model."""

from __future__ import annotations

import json

import pytest
import torch

from thinkfast.config import from_dict
from thinkfast.config.common import DataSpec
from thinkfast.data.packing import PackedLoader, pack
from thinkfast.data.training import load_responses, training_data, training_examples
from thinkfast.errors import DataError


def spec(**data) -> DataSpec:
    return from_dict(DataSpec, data, source="test", path="data")


def response_of(ids: list[int], mask: list[bool], tokenizer) -> str:
    """Decoded target tokens without the final EOS."""
    targets = [t for t, m in zip(ids, mask, strict=True) if m]
    assert targets[-1] == tokenizer.eos_token_id
    return tokenizer.decode(targets[:-1])


def test_reference_solutions_become_masked_examples(smollm_tokenizer):
    examples = training_examples(spec(dataset="synthetic-arith", limit=6), smollm_tokenizer)
    assert len(examples) == 6
    for ids, mask in examples:
        assert len(ids) == len(mask) and not mask[0]
        text = response_of(ids, mask, smollm_tokenizer)
        assert text.startswith(tuple("0123456789")) and "\n#### " in text


def write_samples(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_teacher_responses_join_by_problem_id_and_filter(smollm_tokenizer, tmp_path):
    samples = tmp_path / "samples.jsonl"
    base = spec(dataset="synthetic-arith", limit=3)
    from thinkfast.data import load_problems

    _, problems = load_problems(base)
    rows = []
    for p in problems:
        rows.append({"problem_id": p.id, "sample_index": 0, "text": f"Right.\n#### {p.answer}"})
        rows.append({"problem_id": p.id, "sample_index": 1, "text": f"Wrong.\n#### {int(p.answer) + 1}"})
    rows.append({"problem_id": "arith-train-999", "sample_index": 0, "text": "not selected\n#### 1"})
    write_samples(samples, rows)

    every = training_examples(spec(dataset="synthetic-arith", limit=3, responses=str(samples)), smollm_tokenizer)
    assert len(every) == 6
    correct = training_examples(
        spec(dataset="synthetic-arith", limit=3, responses=str(samples), responses_filter="correct"), smollm_tokenizer
    )
    assert [response_of(ids, mask, smollm_tokenizer) for ids, mask in correct] == [
        f"Right.\n#### {p.answer}" for p in problems
    ]


def test_responses_errors(smollm_tokenizer, tmp_path):
    samples = tmp_path / "samples.jsonl"
    write_samples(samples, [{"problem_id": "someone-else-0", "text": "#### 1"}])
    with pytest.raises(DataError, match="no sample in .* matches a problem id"):
        training_examples(spec(dataset="synthetic-arith", limit=2, responses=str(samples)), smollm_tokenizer)
    samples.write_text('{"problem_id": "arith-train-0", "text": "#### 1"}\n{"problem_id": "arith-train-1"}\n')
    with pytest.raises(DataError, match=r"samples.jsonl:2: missing field 'text'"):
        load_responses(samples)
    with pytest.raises(DataError, match="does not exist"):
        load_responses(tmp_path / "missing.jsonl")


def test_a_responses_file_cut_by_a_killed_generate_is_read_without_its_cut_line(tmp_path):
    """data.responses names a samples.jsonl that generate writes; a generate killed mid-write leaves its last
    line cut short. generate's resume and evaluate leave that line out; distill stopped with "not valid JSON".
    It now leaves it out too, with a warning naming file:line, and still refuses a bad line elsewhere."""
    samples = tmp_path / "samples.jsonl"
    whole = '{"problem_id": "arith-train-0", "text": "#### 1"}\n{"problem_id": "arith-train-1", "text": "#### 2"}\n'
    samples.write_text(whole + '{"problem_id": "arith-train-2", "te')
    data = training_data(spec(dataset="synthetic-arith", limit=3, responses=str(samples)))
    assert [(p.id, text) for p, text in data.pairs] == [("arith-train-0", "#### 1"), ("arith-train-1", "#### 2")]
    assert data.warnings == [f"data.responses: {samples}:3: the last line is cut short (generate was stopped "
                             f"while writing it); that sample is left out"]
    samples.write_text('{"problem_id": "arith-train-0", "te\n' + whole)
    with pytest.raises(DataError, match=r"samples.jsonl:1: not valid JSON"):
        training_data(spec(dataset="synthetic-arith", limit=3, responses=str(samples)))


def test_loader_over_real_examples(smollm_tokenizer):
    examples = training_examples(spec(dataset="synthetic-arith", limit=40), smollm_tokenizer)
    loader = PackedLoader(examples, seq_len=1024, batch_size=2, pad_id=smollm_tokenizer.pad_token_id, seed=0)
    batch = next(loader)
    assert batch.input_ids.shape == (2, 1024)
    assert batch.num_target_tokens > 0
    assert (batch.doc_ids.max(dim=1).values >= 2).all()  # several documents per row


def test_packed_documents_do_not_influence_each_other():
    """A hybrid (attention + SSM) model gives a document the same logits packed or alone."""
    from thinkfast.models.config import ModelConfig, SSMConfig
    from thinkfast.models.model import ThinkfastLM

    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
        head_dim=8, mixers=["ssm", "attention"],
        ssm=SSMConfig(num_heads=4, head_dim=8, state_size=8, num_x_heads=2, num_b_groups=2, num_c_groups=2,
                      chunk_size=8),
    )
    model = ThinkfastLM(config, dtype=torch.float64).eval()
    gen = torch.Generator().manual_seed(1)
    lengths = (13, 5, 21, 9)
    examples = [(torch.randint(1, 64, (n,), generator=gen).tolist(), [True] * n) for n in lengths]
    batch = pack(examples, seq_len=64, pad_id=0, shuffle=False)
    assert batch.input_ids.shape[0] == 1 and batch.doc_ids[0].max() == len(lengths)  # all four + padding
    with torch.no_grad():
        packed = model(batch.input_ids, batch.doc_ids).logits[0]
        start = 0
        for ids, _ in examples:
            alone = model(torch.tensor([ids])).logits[0]
            torch.testing.assert_close(packed[start : start + len(ids)], alone, rtol=1e-9, atol=1e-9)
            start += len(ids)


def test_batched_examples_equal_single_example_rendering(smollm_tokenizer):
    from thinkfast.data import load_problems
    from thinkfast.data.render import training_example

    for template in ("chat", "plain"):
        s = spec(dataset="synthetic-arith", limit=5, few_shot=1, template=template)
        plugin, problems = load_problems(s)
        shots = plugin.few_shot_problems(s)
        batched = training_examples(s, smollm_tokenizer, chunk_size=2)
        single = [training_example(p, plugin.response_text(p), smollm_tokenizer, template, shots, plugin.instruction,
                                   answer_format=plugin.answer_format) for p in problems]
        assert batched == single
