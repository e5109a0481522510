"""What ``--models`` names: built-in shapes (random weights), model directories, or recipes.

Built-in shapes need no download: the teacher is built from its :class:`ModelConfig` with random
weights directly on the target device and dtype, and a student is converted from it by its
plugin (``thinkfast.models.students.build_student``), exactly as ``distill`` starts.

================  ==========================================================================
name              model
================  ==========================================================================
llama-3.2-1b      Llama-3.2-1B shape: hidden 2048, 16 layers, 32 heads / 8 KV heads of 64,
                  MLP 8192, vocabulary 128256, tied embeddings, RoPE 500000 with llama3 scaling
llama-3.2-3b      Llama-3.2-3B shape: hidden 3072, 28 layers, 24 heads / 8 KV heads of 128, MLP 8192
llamba-1b/-3b     pure student (``llamba``, defaults) of the matching Llama shape
hybrid-1b/-3b     hybrid student (``mambainllama``, 25% of layers keep attention)
smollm2-135m      SmolLM2-135M shape (the paper miniature's teacher): hidden 576, 30 layers, 9 heads / 3 KV
                  heads of 64, MLP 1536, vocabulary 49152, tied embeddings, RoPE 100000
llamba-135m,      its pure and hybrid students
hybrid-135m
tiny-llama,       the same three kinds on a 4-layer, 64-wide model with a 512-token vocabulary
tiny-llamba,      (CPU tests)
tiny-hybrid
================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from thinkfast.errors import ModelLoadError
from thinkfast.models.config import ModelConfig
from thinkfast.suggest import did_you_mean

_LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}


def llama_3_2_1b() -> ModelConfig:
    """The Llama-3.2-1B(-Instruct) configuration."""
    return ModelConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32,
                       num_kv_heads=8, head_dim=64, rms_norm_eps=1e-5, rope_theta=500000.0,
                       rope_scaling=dict(_LLAMA3_ROPE), max_position_embeddings=131072, tie_embeddings=True)


def llama_3_2_3b() -> ModelConfig:
    """The Llama-3.2-3B(-Instruct) configuration."""
    return ModelConfig(vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_layers=28, num_heads=24,
                       num_kv_heads=8, head_dim=128, rms_norm_eps=1e-5, rope_theta=500000.0,
                       rope_scaling=dict(_LLAMA3_ROPE), max_position_embeddings=131072, tie_embeddings=True)


def smollm2_135m() -> ModelConfig:
    """The SmolLM2-135M(-Instruct) configuration."""
    return ModelConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
                       num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5, rope_theta=100000.0,
                       max_position_embeddings=8192, tie_embeddings=True)


def tiny_llama() -> ModelConfig:
    """A 4-layer, 64-wide Llama (GQA 4:2, tied, llama3 RoPE) for tests on the CPU."""
    return ModelConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=4, num_heads=4,
                       num_kv_heads=2, head_dim=16, rope_theta=10000.0,
                       rope_scaling={**_LLAMA3_ROPE, "factor": 8.0, "original_max_position_embeddings": 128},
                       max_position_embeddings=4096, tie_embeddings=True)


@dataclass(frozen=True)
class BuiltinShape:
    """A teacher configuration plus, for a student, the plugin and options that convert it."""

    teacher: Callable[[], ModelConfig]
    student: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


HYBRID_OPTIONS = {"attention_fraction": 0.25}

SHAPES: dict[str, BuiltinShape] = {}
for _size, _factory in (("1b", llama_3_2_1b), ("3b", llama_3_2_3b)):
    SHAPES[f"llama-3.2-{_size}"] = BuiltinShape(_factory)
    SHAPES[f"llamba-{_size}"] = BuiltinShape(_factory, "llamba")
    SHAPES[f"hybrid-{_size}"] = BuiltinShape(_factory, "mambainllama", HYBRID_OPTIONS)
SHAPES["smollm2-135m"] = BuiltinShape(smollm2_135m)
SHAPES["llamba-135m"] = BuiltinShape(smollm2_135m, "llamba")
SHAPES["hybrid-135m"] = BuiltinShape(smollm2_135m, "mambainllama", HYBRID_OPTIONS)
SHAPES["tiny-llama"] = BuiltinShape(tiny_llama)
SHAPES["tiny-llamba"] = BuiltinShape(tiny_llama, "llamba")
SHAPES["tiny-hybrid"] = BuiltinShape(tiny_llama, "mambainllama", HYBRID_OPTIONS)


@dataclass
class LoadedModel:
    """A model to profile; ``name`` is what tables and plots call it, ``source`` how it was found."""

    name: str
    source: str  # "shape" | "directory" | "recipe"
    model: torch.nn.Module
    kernels_section: Any = None  # the recipe's [kernels] section, if the model came from a recipe


def build_shape(name: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The built-in shape ``name`` with random weights, created directly on ``device`` in ``dtype``."""
    from thinkfast.models.model import ThinkfastLM
    from thinkfast.models.students import build_student

    shape = SHAPES[name]
    teacher = ThinkfastLM(shape.teacher(), device=device, dtype=dtype)
    if shape.student is None:
        return teacher
    student = build_student(teacher, shape.student, dict(shape.options))
    del teacher
    return student


def _from_recipe(path: Path, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """The student a recipe describes: its checkpoint if set, else converted from its (loaded) teacher."""
    from thinkfast.config.loader import load_recipe
    from thinkfast.models.io import load_model
    from thinkfast.models.students import build_student
    from thinkfast.models.teacher import load_teacher

    recipe = load_recipe(path)
    student = recipe.student
    if student.checkpoint:
        model, _ = load_model(student.checkpoint, dtype=dtype, device=device, with_tokenizer=False)
    else:
        if not recipe.teacher.model:
            raise ModelLoadError(f"{path}: teacher.model is empty; a recipe given to --models needs a teacher "
                                 f"(or student.checkpoint)")
        teacher, _ = load_teacher(recipe.teacher, dtype=dtype, device=device)
        model = build_student(teacher, student.kind, student.options)
        del teacher
    return LoadedModel(path.stem, "recipe", model, recipe.kernels)


def spec_kind(spec: str) -> str:
    """``"shape"``, ``"recipe"`` or ``"directory"`` (a directory or ``.gguf`` file) for one ``--models`` entry.

    Raises :class:`ModelLoadError` naming the entry and the built-in shapes when it is none of these.
    """
    if spec in SHAPES:
        return "shape"
    path = Path(spec)
    if path.suffix == ".toml" and path.is_file():
        return "recipe"
    if path.is_dir() or (path.suffix == ".gguf" and path.is_file()):
        return "directory"
    raise ModelLoadError(
        f"--models / profile.models: '{spec}' is not a built-in shape, a model directory, a .gguf file or a recipe "
        f".toml{did_you_mean(spec, SHAPES)}; built-in shapes: {', '.join(SHAPES)}")


def check_spec(spec: str) -> None:
    """:func:`spec_kind`, and for a model directory the cheap checks of its files (a truncated weights
    file, say), so that a sweep does not measure the models before it only to fail on this one."""
    if spec_kind(spec) == "directory" and Path(spec).is_dir():
        from thinkfast.models.io import check_local_model

        check_local_model(spec)


def load_profile_model(spec: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """Resolve and load one ``--models`` entry (see :func:`spec_kind`)."""
    kind = spec_kind(spec)
    if kind == "shape":
        return LoadedModel(spec, "shape", build_shape(spec, device, dtype))
    path = Path(spec)
    if kind == "recipe":
        return _from_recipe(path, device, dtype)
    from thinkfast.models.teacher import load_any

    model, _ = load_any(str(path), dtype=dtype, device=device)
    return LoadedModel(path.name or str(path), "directory", model)
