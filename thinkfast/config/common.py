"""Recipe sections shared by several subcommands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from thinkfast.config.fields import option

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class RunSection:
    """Settings shared by every subcommand."""

    name: str = option("run", "Name of the run; used in the default output directory and in reports.")
    seed: int = option(0, "Seed for every random number generator (data order, init, sampling).", min=0)
    device: str = option("auto", "Device: 'auto' (first CUDA GPU if any, else CPU), 'cpu', 'cuda' or 'cuda:N'.")
    dtype: str = option("auto", "Compute dtype: 'auto' is bfloat16 on GPU and float32 on CPU.", choices=DTYPES)
    output_dir: str = option("", "Where outputs go; empty means runs/<name>, or runs/<subcommand> while `name` "
                             "is 'run'. `--output-dir` overrides it.")

    def check(self) -> list[tuple[str, str]]:
        if self.device not in ("auto", "cpu", "cuda") and not (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        ):
            return [("device", f"{self.device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'")]
        return []


def _absent(name: str) -> str:
    """``NAME does not exist``, saying what a relative path is relative to."""
    where = "" if Path(name).is_absolute() else " (relative to the current directory)"
    return f"{name} does not exist{where}"


@dataclass
class ModelSpec:
    """A model to load: a Hugging Face hub id, a local directory, or a ``.gguf`` file."""

    model: str = option("", "Hub id (e.g. 'meta-llama/Llama-3.2-1B-Instruct'), local directory or .gguf file path.")
    gguf_file: str = option("", "GGUF file name inside a hub repo or directory (leave empty otherwise).")
    revision: str = option("", "Hub revision (branch, tag or commit); empty means the default branch.")
    tokenizer: str = option("", "Load the tokenizer from here instead of from `model`.")

    def missing_files(self) -> list[tuple[str, str]]:
        """``("model", message)`` when ``model`` names a ``.gguf`` file that does not exist.

        Only a GGUF file: thinkfast never writes one, while a model directory may be an earlier step's
        output and a name that is no path may be a hub id (checked when the model loads).
        """
        if self.model.endswith(".gguf") and not Path(self.model).expanduser().is_file():
            return [("model", f"{_absent(self.model)}; point it at a .gguf file, a model directory or a hub id")]
        return []


@dataclass
class StudentSection:
    """Which student architecture to build from the teacher."""

    plugin_family: ClassVar[str] = "students"
    plugin_field: ClassVar[str] = "kind"

    kind: str = option("mambainllama", "Student plugin name (see `thinkfast plugins`).", plugin="students")
    options: dict[str, Any] = option({}, "Options of the chosen student plugin (see the recipe reference).")
    checkpoint: str = option("", "Start from this saved student directory instead of converting the teacher.")


@dataclass
class KernelsSection:
    """Which kernel plugin runs each operation; 'auto' picks the best available for the device."""

    ssm: str = option("auto", "SSD chunk scan and step.", plugin="kernels")
    conv: str = option("auto", "Causal depthwise conv1d and its step.", plugin="kernels")
    attention: str = option("auto", "Attention prefill and decode.", plugin="kernels")


@dataclass
class DataSpec:
    """Where problems or training records come from: a dataset plugin plus its options."""

    plugin_family: ClassVar[str] = "datasets"
    plugin_field: ClassVar[str] = "dataset"

    dataset: str = option("synthetic-arith", "Dataset plugin name (see `thinkfast plugins`).", plugin="datasets")
    path: str = option("", "Local file or directory to read instead of the plugin's default source (hub or built-in).")
    split: str = option("train", "Split to read ('train', 'test', ...).")
    offset: int = option(0, "Skip this many records first (e.g. to hold out a slice).", min=0)
    limit: int = option(0, "Read at most this many records after `offset`; 0 means all.", min=0)
    template: str = option("auto", "Prompt rendering: 'chat' (tokenizer chat template), 'plain', or 'auto' "
                           "(chat when the tokenizer has a template).", choices=("auto", "chat", "plain"))
    few_shot: int = option(0, "Number of worked examples put before each prompt.", min=0)
    instruction: str = option("", "Text appended to each question telling the model how to mark its final "
                              "answer; empty means the dataset plugin's own instruction.")
    responses: str = option("", "Training responses from a `thinkfast generate` output file (samples.jsonl), "
                            "joined to problems by `problem_id`; empty means the dataset's reference solutions.")
    responses_filter: str = option("all", "Which teacher responses to train on: 'all', or 'correct' (the "
                                   "extracted answer equals the reference).", choices=("all", "correct"))
    options: dict[str, Any] = option({}, "Options of the chosen dataset plugin (see the recipe reference).")

    def missing_files(self) -> list[tuple[str, str]]:
        """``(key, message)`` for ``path`` and ``responses`` when they name files that do not exist.

        Not part of loading a recipe (one recipe serves several subcommands, and a section's files may
        be written by an earlier step): ``recipe validate`` and the subcommand that reads them check it
        (:func:`thinkfast.config.validate.check_input_files`).
        """
        out = []
        if self.path and not Path(self.path).expanduser().exists():
            out.append(("path", f"{_absent(self.path)}; point it at a .jsonl, .json or .parquet file or a "
                                f"directory of them"))
        if self.responses and not Path(self.responses).expanduser().is_file():
            out.append(("responses", f"{_absent(self.responses)}; point it at the samples.jsonl that "
                                     f"`thinkfast generate` wrote"))
        return out
