"""Student plugins: options, layer choice, validation errors, and the Llamba-1B parameter count (meta tensors)."""

from __future__ import annotations

import pytest
import torch

from thinkfast.config import from_dict
from thinkfast.config.common import StudentSection
from thinkfast.errors import RecipeError
from thinkfast.models import ModelConfig, ThinkfastLM, build_student
from thinkfast.models.convert import evenly_spaced_layers

LLAMA_3_2_1B = ModelConfig(
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32, num_kv_heads=8,
    head_dim=64, rope_theta=500000.0, tie_embeddings=True,
    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192})


@pytest.fixture(scope="module")
def small_teacher() -> ThinkfastLM:
    torch.manual_seed(0)
    return ThinkfastLM(ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=8, num_heads=4,
                                   num_kv_heads=2, head_dim=8))


def test_evenly_spaced_layers():
    assert evenly_spaced_layers(16, 0.25) == [0, 4, 8, 12]
    assert evenly_spaced_layers(16, 0.5) == list(range(0, 16, 2))
    assert evenly_spaced_layers(8, 0.0) == [] and evenly_spaced_layers(8, 1.0) == list(range(8))


def test_hybrid_layer_choice(small_teacher):
    by_fraction = build_student(small_teacher, "mambainllama", {"attention_fraction": 0.25})
    assert by_fraction.config.attention_layers == [0, 4]
    by_list = build_student(small_teacher, "mambainllama", {"attention_layers": [3, 7], "attention_fraction": 0.9})
    assert by_list.config.attention_layers == [3, 7]


def test_recipe_validates_student_options_against_the_plugin():
    section = from_dict(StudentSection, {"kind": "llamba", "options": {"state_size": 16}})
    assert section.options["state_size"] == 16 and section.options["conv_kernel"] == 4  # defaults filled in
    with pytest.raises(RecipeError, match="options.conv_init: 'identity' is not one of random, delta"):
        from_dict(StudentSection, {"kind": "llamba", "options": {"conv_init": "identity"}})
    with pytest.raises(RecipeError, match="unknown key"):
        from_dict(StudentSection, {"kind": "mambainllama", "options": {"attention_layer": [1]}})


@pytest.mark.parametrize(("kind", "options", "message"), [
    ("mambainllama", {"attention_layers": [9]}, "out of range"),
    ("llamba", {"num_heads": 5}, "not divisible by num_heads"),
    ("llamba", {"num_bc_groups": 3}, "must divide num_heads"),
    ("llamba", {"a_init_min": 20.0}, "must not exceed"),
])
def test_bad_student_options_are_recipe_errors(small_teacher, kind, options, message):
    with pytest.raises(RecipeError, match=message):
        build_student(small_teacher, kind, options)


def test_delta_conv_init_and_no_conv(small_teacher):
    delta = build_student(small_teacher, "llamba", {"conv_init": "delta"})
    w = delta.layers[0].mixer.conv_weight
    assert torch.equal(w[:, -1], torch.ones(w.shape[0])) and torch.equal(w[:, :-1], torch.zeros(w.shape[0], 3))
    no_conv = build_student(small_teacher, "llamba", {"conv_kernel": 0, "gate": False})
    assert not hasattr(no_conv.layers[0].mixer, "conv_weight")
    assert no_conv(torch.randint(0, 64, (1, 7))).logits.shape == (1, 7, 64)


def test_students_do_not_share_storage_with_teacher(small_teacher):
    student = build_student(small_teacher, "transformer")
    with torch.no_grad():
        student.embed_tokens.weight.add_(1.0)
    assert not torch.equal(student.embed_tokens.weight, small_teacher.embed_tokens.weight)


def test_llamba_1b_parameter_count():
    """Computed on the meta device: Llama-3.2-1B-shaped teacher -> default llamba student."""
    teacher = ThinkfastLM(LLAMA_3_2_1B, device="meta")
    student = build_student(teacher, "llamba")
    print(f"Llama-3.2-1B shape: {teacher.num_parameters():,} parameters; llamba student: "
          f"{student.num_parameters():,}")
    assert teacher.num_parameters() == 1_235_814_400  # Llama-3.2-1B's published count
    assert student.num_parameters() == 1_405_128_192
    assert student.embed_tokens.weight.is_meta
