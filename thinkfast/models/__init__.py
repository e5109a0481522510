"""Models: ``ModelConfig``, ``ThinkfastLM`` (attention or Mamba-2 mixers per layer), caches, save/load, teachers.

See ``docs/models.md``.
"""

from thinkfast.models.cache import AttentionCache, InferenceCache, SSMCache
from thinkfast.models.config import ModelConfig, SSMConfig
from thinkfast.models.io import load_model, save_model
from thinkfast.models.model import Block, LMOutput, ThinkfastLM, segment_index
from thinkfast.models.students import build_student, student_options
from thinkfast.models.teacher import load_any, load_teacher

__all__ = [
    "AttentionCache", "Block", "InferenceCache", "LMOutput", "ModelConfig", "SSMCache", "SSMConfig",
    "ThinkfastLM", "build_student", "load_any", "load_model", "load_teacher", "save_model", "segment_index",
    "student_options",
]
