"""The plugin examples in the docs run as written: each Python block that registers a component is executed
as a plugin module, registered at runtime and used the way the command line uses it."""

from __future__ import annotations

import re
import sys
import textwrap
import types
from pathlib import Path

import pytest

from thinkfast import registry as registry_module
from thinkfast.config import from_dict
from thinkfast.config.common import DataSpec

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _example_module(page: str, hook: str) -> types.ModuleType:
    """The one ```python block of ``page`` that defines ``hook``, as an importable module."""
    fenced = re.findall(r"^( *)```python\n(.*?)^\1```", (DOCS / page).read_text(), flags=re.S | re.M)
    blocks = [textwrap.dedent(body) for _, body in fenced]
    (source,) = [b for b in blocks if f"def {hook}(" in b]
    name = f"docs_example_{hook}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    exec(compile(source, f"{page}:{hook}", "exec"), module.__dict__)
    return module


@pytest.fixture
def registered():
    before: list = []

    def install(module):
        before.append(registry_module.set_registry(registry_module.load_registry(extra_modules=[module])))

    yield install
    if before:
        registry_module.set_registry(before[0])


def test_the_student_example_of_plugins_md_builds_a_student(registered):
    import torch

    from thinkfast.models import ModelConfig, ThinkfastLM, build_student

    registered(_example_module("plugins.md", "register_students"))
    teacher = ThinkfastLM(ModelConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_layers=3,
                                      num_heads=2, num_kv_heads=1, head_dim=8))
    student = build_student(teacher, "last-layers-ssm", {"ssm_layers": 2})
    assert student.config.mixers == ["attention", "ssm", "ssm"] and student.config.student == "last-layers-ssm"
    assert student(torch.randint(0, 50, (1, 5))).logits.shape == (1, 5, 50)


def test_the_dataset_example_of_datasets_md_loads_problems(registered):
    from thinkfast.data import load_problems

    registered(_example_module("datasets.md", "register_datasets"))
    spec = from_dict(DataSpec, {"dataset": "doubling", "split": "test", "options": {"size": 3}}, source="test")
    plugin, problems = load_problems(spec)
    assert [(p.id, p.answer) for p in problems] == [("double-test-0", "0"), ("double-test-1", "2"),
                                                    ("double-test-2", "4")]
    assert plugin.extract_answer(plugin.response_text(problems[2])) == "4"
