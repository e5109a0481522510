"""Model directories: ``config.json`` (:class:`ModelConfig`) + ``model.safetensors`` + tokenizer files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from thinkfast.errors import ModelLoadError
from thinkfast.models.config import ModelConfig
from thinkfast.models.model import ThinkfastLM
from thinkfast.models.teacher import is_thinkfast_dir, model_from_state_dict

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_model(model: ThinkfastLM, tokenizer: Any, directory: str | Path) -> Path:
    """Write ``model`` (and ``tokenizer``, if not ``None``) to ``directory`` (created); returns the path.

    Weights keep their dtype; a tied LM head is stored once (as ``embed_tokens.weight``).
    """
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt", "producer": "thinkfast"})
    (out / WEIGHTS_FILE).chmod(_new_file_mode())  # safetensors writes 0600, whatever the umask
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out


def _new_file_mode() -> int:
    """The permission bits ``open()`` gives a new file under the process's umask (0o644 under 0o022).

    The umask is read from ``/proc/self/status`` where there is one (Linux): setting it to read it, the only
    portable way, would for a moment give files another thread creates mode 0o666."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def check_weights(file: Path) -> None:
    """Raise :class:`ModelLoadError` naming ``file`` when it is not a complete safetensors file (a copy or
    download cut short, say). Reads the header only: cheap whatever the model's size."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt"):
            pass
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"{file} is truncated or corrupt ({exc}); save the model again, or copy or download "
                             f"it again") from None


def check_model_dir(directory: str | Path) -> ModelConfig:
    """Check, without loading any weights, that ``directory`` is a loadable thinkfast model directory:
    its config marks it as one and is valid, and its weights file is there and complete. Returns the
    config; raises :class:`ModelLoadError`."""
    path = Path(directory)
    if not is_thinkfast_dir(path):
        raise ModelLoadError(f"{path} is not a thinkfast model directory ({CONFIG_FILE} with \"format\": "
                             f"\"thinkfast\" is missing); save one with `thinkfast distill` or give a teacher")
    if not (path / WEIGHTS_FILE).is_file():
        raise ModelLoadError(f"{path / WEIGHTS_FILE} is missing")
    config = ModelConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()), source=str(path / CONFIG_FILE))
    check_weights(path / WEIGHTS_FILE)
    return config


def check_local_model(directory: str | Path) -> None:
    """The cheap checks of a local model directory before anything is loaded: a thinkfast directory as in
    :func:`check_model_dir`, any other (a Hugging Face directory) for complete ``*.safetensors`` files."""
    path = Path(directory)
    if is_thinkfast_dir(path):
        check_model_dir(path)
    elif path.is_dir():
        for file in sorted(path.glob("*.safetensors")):
            check_weights(file)


def load_model(directory: str | Path, *, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None, with_tokenizer: bool = True) -> tuple[ThinkfastLM, Any]:
    """Read a directory written by :func:`save_model`; returns ``(model, tokenizer or None)``.

    ``dtype``/``device`` convert after loading (default: as saved, on CPU). Bit-exact round trip.
    """
    from safetensors.torch import load_file

    path = Path(directory)
    config = check_model_dir(path)
    state = load_file(str(path / WEIGHTS_FILE), device=str(device) if device is not None else "cpu")
    model = model_from_state_dict(config, state, f"the weights in {path / WEIGHTS_FILE}", CONFIG_FILE)
    if dtype is not None:
        model = model.to(dtype)
    tokenizer = None
    if with_tokenizer and any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import PretrainedConfig

        from thinkfast.models.teacher import load_tokenizer

        # an empty config keeps transformers from parsing our config.json as one of its own
        tokenizer = load_tokenizer(str(path), config=PretrainedConfig())
    return model, tokenizer
