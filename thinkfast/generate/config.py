"""The ``[generate]`` recipe section."""

from __future__ import annotations

from dataclasses import dataclass

from thinkfast.config.common import DataSpec
from thinkfast.config.fields import option
from thinkfast.data.answers import ANSWER_LINE_CHARS


@dataclass
class GenerateSection:
    """Sampling many chain-of-thought answers per problem."""

    model: str = option("", "Model directory written by `distill`, or a teacher (hub id, HF directory, .gguf); "
                        "empty means the recipe's [teacher].")
    data: DataSpec = option(default_factory=lambda: DataSpec(dataset="gsm8k", split="test"),
                            help="Problems to answer.")
    n_samples: int = option(8, "Samples per problem.", min=1)
    temperature: float = option(0.8, "Sampling temperature; 0 means greedy.", min=0.0)
    top_p: float = option(1.0, "Nucleus sampling mass (1 disables).", min=0.0, max=1.0)
    top_k: int = option(0, "Keep only the k most likely tokens (0 disables).", min=0)
    min_p: float = option(0.0, "Drop tokens below min_p x the top probability (0 disables).", min=0.0, max=1.0)
    max_new_tokens: int = option(512, "Generated tokens per sample at most.", unit="tokens", min=1)
    stop: list[str] = option([], "Stop strings: a sample ends at the first token that completes one; its text is "
                             "cut before it.")
    # (no "|" in this help: the recipe reference's table would show it as "/")
    stop_on_special_tokens: bool = option(True, "End a sample when it samples any of the tokenizer's special "
                                          "tokens (BOS, EOS, PAD, chat control tokens such as ChatML's im_start), "
                                          "not only the model's EOS; the finish reason is \"eos\".")
    stop_at_answer: bool = option(True, "End a sample once its answer is complete, when nothing generated after "
                                  "it could change the extracted answer: for the gsm8k answer format, at the "
                                  "newline of the first '#### <number>' line, if it comes within "
                                  f"{ANSWER_LINE_CHARS} characters of the ####; the text is cut before that "
                                  "newline and the finish reason is \"answer\". Formats that read the last "
                                  "answer (math, plain) never end early.")
    batch_size: int = option(64, "Decode slots in flight (sequences decoded together each step).", min=1)
    check_every: int = option(16, "Decode steps between host checks for finished samples and stop strings.",
                              unit="steps", min=1)
    cuda_graphs: bool = option(True, "Capture the decode step in a CUDA graph (GPU only; ignored on CPU).")
    compile: bool = option(True, "Compile the decode step with torch.compile before capturing it (fuses norms, "
                           "activations and sampling; costs seconds per engine), and run the prefill's norms, "
                           "gates and rotary embeddings as compiled kernels (GPU only, ignored on CPU).")
    state_dtype: str = option("float32", "dtype of the SSM state in the inference cache.",
                              choices=("float32", "bfloat16", "float16"))
    prefill_tokens: int = option(32768, "Largest batched prefill: prompts are prefilled together up to this many "
                                 "(padded) tokens.", unit="tokens", min=1)
    prefill_padding: float = option(0.25, "Largest fraction of a batched prefill that may be left padding (prompts "
                                    "of different lengths in one forward); 0 groups equal lengths only.",
                                    min=0.0, max=0.99)
    prefill_bucket: int = option(64, "Prompts are left-padded to a multiple of this many tokens before prefill, so "
                                 "prefill forwards take a few shapes only and kernels built per shape are built "
                                 "once, by warm-up prefills before the clock starts (GPU); 1 disables.",
                                 unit="tokens", min=1)
    overlap_prefill: bool = option(False, "Launch each cycle's decode steps before the refills' prefills, so that "
                                   "the prefills' launch time (host-bound for small models) overlaps the decoding; "
                                   "refilled slots then start one cycle later. Measured within run-to-run spread "
                                   "(-4% to +3%) on a 135M workload (docs/performance.md).")
