"""Teachers: transformers Llama models (HF dir, GGUF) converted to ThinkfastLM match transformers' logits."""

from __future__ import annotations

import pytest
import torch

from thinkfast.errors import ModelLoadError
from thinkfast.models import build_student, load_any, load_teacher, save_model


@pytest.fixture(scope="module")
def hf_and_teacher(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    teacher, tokenizer = load_teacher(str(tiny_llama_dir))
    return hf, teacher, tokenizer


def _ids(n=2, length=300, vocab=1000):
    # long enough to pass original_max_position_embeddings (128) so that llama3 scaling matters
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(0))


def test_teacher_config_reads_gqa_tying_eps_and_llama3_rope(hf_and_teacher):
    _, teacher, tokenizer = hf_and_teacher
    c = teacher.config
    assert (c.num_heads, c.num_kv_heads, c.head_dim, c.num_layers) == (4, 2, 16, 4)
    assert c.tie_embeddings and teacher.lm_head.weight.data_ptr() == teacher.embed_tokens.weight.data_ptr()
    assert c.rope_scaling["rope_type"] == "llama3" and c.rope_theta == 10000.0
    assert c.mixers == ["attention"] * 4 and tokenizer.eos_token_id in c.eos_token_ids


@torch.no_grad()
def test_converted_teacher_matches_transformers(hf_and_teacher):
    hf, teacher, _ = hf_and_teacher
    ids = _ids()
    expected = hf(ids).logits
    diff = (teacher(ids).logits - expected).abs().max().item()
    print(f"converted teacher vs transformers: max abs logit diff {diff:.2e} (logit scale "
          f"{expected.abs().max().item():.2f})")
    assert diff < 5e-5


@torch.no_grad()
def test_hybrid_keeping_every_attention_layer_reproduces_teacher(hf_and_teacher):
    hf, teacher, _ = hf_and_teacher
    hybrid = build_student(teacher, "mambainllama", {"attention_fraction": 1.0})
    assert hybrid.config.mixers == ["attention"] * 4 and hybrid.config.student == "mambainllama"
    ids = _ids()
    diff = (hybrid(ids).logits - hf(ids).logits).abs().max().item()
    print(f"hybrid with all attention layers vs transformers teacher: max abs logit diff {diff:.2e}")
    assert diff < 5e-5
    # a hybrid that drops a layer's attention does change the output
    half = build_student(teacher, "mambainllama", {"attention_layers": [0, 1, 2]})
    assert (half(ids).logits - hf(ids).logits).abs().max() > 1e-3


@torch.no_grad()
def test_ssm_layers_are_initialised_from_attention(hf_and_teacher):
    _, teacher, _ = hf_and_teacher
    hybrid = build_student(teacher, "mambainllama", {"attention_layers": [0, 2]})
    attn, ssm = teacher.layers[1].mixer, hybrid.layers[1].mixer
    rows = ssm.in_proj_slices()
    w = ssm.in_proj.weight
    assert torch.equal(w[rows["C"]], attn.q_proj.weight)
    assert torch.equal(w[rows["B"]], attn.k_proj.weight)
    assert torch.equal(w[rows["x"]], attn.v_proj.weight)
    assert torch.equal(ssm.out_proj.weight, attn.o_proj.weight)
    assert ssm.cfg.state_size == 16 and ssm.cfg.num_x_heads == 2 and ssm.cfg.num_c_groups == 4
    assert (ssm.A < 0).all() and torch.equal(ssm.D, torch.ones(4))
    # llamba with 8 x heads repeats the 2 KV heads GQA-style: head h takes KV head h // 4
    llamba = build_student(teacher, "llamba", {"num_heads": 8, "expand": 1.0, "state_size": 4})
    lw, lrows = llamba.layers[1].mixer.in_proj.weight, llamba.layers[1].mixer.in_proj_slices()
    x_rows = lw[lrows["x"]].view(8, 8, 64)  # 8 heads of head_dim 8 (64 / 8)
    v = attn.v_proj.weight.view(2, 16, 64)
    assert torch.equal(x_rows[5], v[1, :8]) and torch.equal(x_rows[3], v[0, :8])
    c_rows = lw[lrows["C"]].view(8, 4, 64)
    assert torch.equal(c_rows[7], attn.q_proj.weight.view(4, 16, 64)[3, :4])


def test_load_any_reads_thinkfast_dirs_and_teachers(hf_and_teacher, tiny_llama_dir, tmp_path):
    _, teacher, tokenizer = hf_and_teacher
    student = build_student(teacher, "llamba", {"chunk_size": 16})
    save_model(student, tokenizer, tmp_path / "s")
    loaded, tok = load_any(str(tmp_path / "s"))
    assert loaded.config.student == "llamba" and tok is not None and len(tok) == len(tokenizer)
    again, _ = load_any(str(tiny_llama_dir))
    assert again.config.student == "transformer"


def test_bad_teacher_specs_raise_model_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_teacher(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match="is a directory without config.json"):
        load_teacher(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')  # a config, but no weights
    with pytest.raises(ModelLoadError, match=f"cannot load teacher '{tmp_path}': .*[^.]; give a hub id"):
        load_teacher(str(tmp_path))


@pytest.mark.slow
@torch.no_grad()
def test_smollm_gguf_converts_into_both_students(smollm_gguf):
    teacher, tokenizer = load_teacher(str(smollm_gguf))
    c = teacher.config
    assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads) == (30, 576, 9, 3)
    ids = torch.tensor([tokenizer.encode("What is 12 times 7? Answer:")])
    teacher_logits = teacher(ids).logits
    assert torch.isfinite(teacher_logits).all()
    assert tokenizer.decode(teacher_logits[0, -1].argmax()).strip() != ""
    for kind, options in (("mambainllama", {"attention_fraction": 0.5}), ("llamba", {})):
        student = build_student(teacher, kind, options)
        logits = student(ids).logits
        assert logits.shape == teacher_logits.shape and torch.isfinite(logits).all()
        print(f"SmolLM2 GGUF -> {kind}: {sum(m == 'ssm' for m in student.config.mixers)} SSM layers, "
              f"{student.num_parameters() / 1e6:.1f}M parameters")
