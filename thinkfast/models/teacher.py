"""Loading a Llama-family teacher with transformers and converting it into an all-attention ``ThinkfastLM``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from thinkfast.errors import ModelLoadError
from thinkfast.models.config import CONFIG_FORMAT, ModelConfig
from thinkfast.models.model import ThinkfastLM

SUPPORTED_MODEL_TYPES = ("llama", "mistral")


def _spec_fields(spec: Any) -> dict[str, str]:
    """A string or an object/dict with ``model``, ``gguf_file``, ``revision``, ``tokenizer`` -> dict."""
    keys = ("model", "gguf_file", "revision", "tokenizer")
    if isinstance(spec, (str, Path)):
        return {"model": str(spec), "gguf_file": "", "revision": "", "tokenizer": ""}
    get = spec.get if isinstance(spec, dict) else lambda k, d="": getattr(spec, k, d)
    return {k: str(get(k, "") or "") for k in keys}


def looks_like_hub_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hugging Face hub id (``name`` or ``org/name``), not of a path."""
    return re.fullmatch(r"\w[\w.-]{0,95}(/\w[\w.-]{0,95})?", name) is not None and ".." not in name


def _resolve(fields: dict[str, str], what: str = "teacher") -> tuple[str, dict[str, Any]]:
    """Where ``from_pretrained`` should look and with which keyword arguments.

    A local path is checked first, so that one that does not exist, a file that is no model, or a
    directory without ``config.json`` gets its own message rather than the hub's. ``what`` names the
    model in messages ("teacher", "model").
    """
    model, kwargs = fields["model"], {}
    if not model:
        raise ModelLoadError("no model given: set `model` to a hub id, a local directory or a .gguf file")
    path = Path(model).expanduser()
    give = "give a model directory, a .gguf file or a hub id (hub ids look like org/name)"
    if model.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"{what} '{model}': .gguf file does not exist; check the path, or give a model "
                                 f"directory or a hub id")
        model, kwargs["gguf_file"] = str(path.parent), path.name
    elif path.is_file():
        raise ModelLoadError(f"{what} '{model}' is a file, not a model directory or a .gguf file; {give}")
    elif path.is_dir():
        if not fields["gguf_file"] and not (path / "config.json").is_file():
            if (path / "student" / "config.json").is_file():  # `thinkfast distill -o DIR` writes DIR/student
                give = f"it holds distill's outputs: give its student, {Path(model) / 'student'}"
            raise ModelLoadError(f"{what} '{model}' is a directory without config.json, so not a model directory; "
                                 f"{give}")
        model = str(path)
    elif not looks_like_hub_id(model):
        raise ModelLoadError(f"{what} '{model}': no such file or directory, and not a hub id; give an existing "
                             f"model directory or .gguf file, or a hub id (those look like org/name)")
    if fields["gguf_file"] and "gguf_file" not in kwargs:
        kwargs["gguf_file"] = fields["gguf_file"]
    if fields["revision"]:
        kwargs["revision"] = fields["revision"]
    return model, kwargs


def _one_line(exc: Exception) -> str:
    """``Type: message`` on one line, without a closing period (the caller's sentence goes on)."""
    text = " ".join(str(exc).split()).rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def rope_settings(hf_config: Any) -> tuple[float, dict[str, Any] | None]:
    """``(rope_theta, rope_scaling)`` from a transformers config (5.x ``rope_parameters`` or older
    ``rope_theta`` + ``rope_scaling``); ``rope_scaling`` is ``None`` for plain RoPE."""
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    legacy = dict(getattr(hf_config, "rope_scaling", None) or {})
    theta = float(params.get("rope_theta", getattr(hf_config, "rope_theta", None) or 10000.0))
    scaling = {k: v for k, v in (params or legacy).items() if k != "rope_theta"}
    if "type" in scaling and "rope_type" not in scaling:
        scaling["rope_type"] = scaling.pop("type")
    if scaling.get("rope_type", "default") == "default":
        return theta, None
    return theta, scaling


def _eos_ids(hf_model: Any) -> list[int]:
    ids: list[int] = []
    for cfg in (hf_model.config, getattr(hf_model, "generation_config", None)):
        value = getattr(cfg, "eos_token_id", None) if cfg is not None else None
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and int(v) not in ids:
                ids.append(int(v))
    return ids


def config_from_hf(hf_model: Any) -> ModelConfig:
    """The :class:`ModelConfig` (all attention) of a transformers Llama-family model."""
    c = hf_model.config
    if c.model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(f"model type '{c.model_type}' is not supported as a teacher; supported: "
                             f"{', '.join(SUPPORTED_MODEL_TYPES)} (Llama-family architectures)")
    if getattr(c, "hidden_act", "silu") != "silu":
        raise ModelLoadError(f"teacher MLP activation '{c.hidden_act}' is not supported (only silu / SwiGLU)")
    theta, scaling = rope_settings(c)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return ModelConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads,
        num_kv_heads=getattr(c, "num_key_value_heads", None) or c.num_attention_heads, head_dim=head_dim,
        rms_norm_eps=c.rms_norm_eps, rope_theta=theta, rope_scaling=scaling,
        max_position_embeddings=c.max_position_embeddings,
        tie_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
        attention_bias=bool(getattr(c, "attention_bias", False)), mlp_bias=bool(getattr(c, "mlp_bias", False)),
        student="transformer", bos_token_id=getattr(c, "bos_token_id", None), eos_token_ids=_eos_ids(hf_model),
    )


def hf_key_to_thinkfast(key: str) -> str:
    """``model.layers.3.self_attn.q_proj.weight`` -> ``layers.3.mixer.q_proj.weight`` (and so on)."""
    key = key.removeprefix("model.")
    return key.replace(".self_attn.", ".mixer.")


@torch.no_grad()
def convert_hf_model(hf_model: Any) -> ThinkfastLM:
    """An all-attention :class:`ThinkfastLM` with the weights (dtype, device) of a transformers Llama model."""
    config = config_from_hf(hf_model)
    state = {hf_key_to_thinkfast(k): v for k, v in hf_model.state_dict().items()
             if "rotary_emb" not in k}
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)
    return model_from_state_dict(config, state, "teacher weights", "a Llama layout")


def model_from_state_dict(config: ModelConfig, state: dict[str, torch.Tensor], source: str,
                          expected: str) -> ThinkfastLM:
    """A :class:`ThinkfastLM` of ``config`` holding exactly ``state``'s tensors (no copy, no random init).

    Built on the meta device, then the tensors are assigned; a missing or unexpected key is a
    :class:`ModelLoadError` saying that ``source`` does not match ``expected``.
    """
    model = ThinkfastLM(config, device="meta")
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (config.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ModelLoadError(f"{source} do not match {expected}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return finalize_loaded(model)


def finalize_loaded(model: ThinkfastLM) -> ThinkfastLM:
    """After ``load_state_dict(assign=True)`` into a meta-built model: re-tie the LM head and rebuild the
    non-persistent buffers (rotary frequencies) on the weights' device."""
    if model.config.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    device = model.embed_tokens.weight.device
    for module in model.modules():
        if hasattr(module, "inv_freq") and module.inv_freq.device.type == "meta":
            from thinkfast.models.layers import rope_inverse_frequencies

            module.inv_freq = rope_inverse_frequencies(module.head_dim, module.theta, module.scaling).to(device)
    return model


def load_tokenizer(source: str, **kwargs: Any) -> Any:
    """``AutoTokenizer.from_pretrained`` with a :class:`ModelLoadError` that names ``source``."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"cannot load a tokenizer from '{source}': {type(exc).__name__}: {exc}") from None


def load_teacher(spec: Any, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None, what: str = "teacher") -> tuple[ThinkfastLM, Any]:
    """Load a Llama-family causal LM with transformers and convert it.

    Args:
        spec: a hub id, a local HF directory or a ``.gguf`` path; or an object/dict with ``model``,
            ``gguf_file``, ``revision`` and ``tokenizer`` (:class:`thinkfast.config.common.ModelSpec`).
        dtype: weight dtype (GGUF files are dequantised to it).
        device: where the converted model lives (default CPU).
        what: what error messages call the model ("teacher"; ``generate`` says "model").

    Returns:
        ``(model, tokenizer)``: an all-attention :class:`ThinkfastLM` and the transformers tokenizer.
    """
    from transformers import AutoModelForCausalLM

    fields = _spec_fields(spec)
    source, kwargs = _resolve(fields, what)
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except Exception as exc:
        if Path(source).is_dir() and not kwargs.get("gguf_file"):
            # a weights file cut short: say so rather than pass on the parser's words
            from thinkfast.models.io import check_local_model

            check_local_model(source)
        raise ModelLoadError(
            f"cannot load {what} '{fields['model']}': {_one_line(exc)}; give a hub id (org/name; the hub must be "
            f"reachable or the model cached), a local Hugging Face directory, or a .gguf file") from None
    model = convert_hf_model(hf_model)
    del hf_model
    if device is not None:
        model = model.to(device)
    tok_kwargs = {} if fields["tokenizer"] else kwargs
    tokenizer = load_tokenizer(fields["tokenizer"] or source, **tok_kwargs)
    return model, tokenizer


def is_thinkfast_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory saved by :func:`thinkfast.models.io.save_model`."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == CONFIG_FORMAT
    except (OSError, ValueError):
        return False


def load_any(spec: Any, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
             what: str = "model") -> tuple[ThinkfastLM, Any]:
    """A thinkfast model directory (:func:`~thinkfast.models.io.load_model`) or else a teacher
    (:func:`load_teacher`; ``what`` names it in error messages); returns ``(model, tokenizer)``.

    A spec's ``tokenizer`` (``[teacher].tokenizer``) is where the tokenizer comes from for either kind; without
    it a thinkfast directory's own tokenizer files (``None`` if it has none)."""
    from thinkfast.models.io import load_model

    fields = _spec_fields(spec)
    model_path = fields["model"]
    if model_path and is_thinkfast_dir(Path(model_path).expanduser()):
        model, tokenizer = load_model(Path(model_path).expanduser(), dtype=dtype, device=device,
                                      with_tokenizer=not fields["tokenizer"])
        if fields["tokenizer"]:
            tokenizer = _tokenizer_from(fields["tokenizer"])
        return model, tokenizer
    return load_teacher(spec, dtype=dtype or torch.float32, device=device, what=what)


def _tokenizer_from(source: str) -> Any:
    """The tokenizer at ``source``; a thinkfast model directory's config.json is not read as a transformers one."""
    if is_thinkfast_dir(Path(source).expanduser()):
        from transformers import PretrainedConfig

        return load_tokenizer(str(Path(source).expanduser()), config=PretrainedConfig())
    return load_tokenizer(source)
