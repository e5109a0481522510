"""Built-in student plugins: ``transformer``, ``mambainllama`` (hybrid) and ``llamba`` (pure SSM).

Each is a class with an ``Options`` dataclass and ``build(teacher, options) -> ThinkfastLM``; the weight
mapping is in :mod:`thinkfast.models.convert` and documented in ``docs/models.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from thinkfast.config import option
from thinkfast.errors import RecipeError
from thinkfast.hookspecs import hookimpl
from thinkfast.models.config import SSMConfig
from thinkfast.models.convert import evenly_spaced_layers, init_ssm_from_attention, new_student
from thinkfast.models.model import ThinkfastLM

CONV_INITS = ("random", "delta")
ACTIVATIONS = ("silu", "identity")


@dataclass
class SSMInitOptions:
    """Options shared by the SSM students: conv, gate, chunking and the A / dt / conv initialisation."""

    conv_kernel: int = option(4, "Taps of the causal depthwise conv over [x, B, C]; 0 disables the conv.",
                              unit="tokens", min=0, max=8)
    conv_init: str = option("random", "Conv init: 'random' (PyTorch Conv1d default) or 'delta' (identity: "
                            "last tap 1, others 0, bias 0).", choices=CONV_INITS)
    activation: str = option("silu", "Activation after the conv: 'silu' or 'identity'.", choices=ACTIVATIONS)
    gate: bool = option(True, "Multiply the SSM output by silu(z), z a new projection of the input.")
    norm: bool = option(True, "RMSNorm over the SSM output before out_proj (gated RMSNorm with `gate`).")
    chunk_size: int = option(128, "Chunk length of the SSD scan.", unit="tokens", min=8, max=1024)
    a_init_min: float = option(1.0, "A = -U(a_init_min, a_init_max) per head.", min=1e-4)
    a_init_max: float = option(16.0, "Upper end of the A init range.", min=1e-4)
    dt_init_min: float = option(0.001, "dt at init is log-uniform in [dt_init_min, dt_init_max] "
                                "(stored as dt_bias = softplus^-1(dt)).", unit="step", min=1e-6)
    dt_init_max: float = option(0.1, "Upper end of the dt init range.", unit="step", min=1e-6)
    init_from_attention: bool = option(True, "Initialise x, B, C, out_proj from W_v, W_k, W_q, W_o "
                                       "(else random).")


def _init_ssm_layers(student: ThinkfastLM, teacher: ThinkfastLM, options: SSMInitOptions) -> None:
    for s_block, t_block in zip(student.layers, teacher.layers, strict=True):
        if s_block.kind != "ssm":
            continue
        s_block.mixer.reset_ssm_parameters(a_range=(options.a_init_min, options.a_init_max),
                                           dt_range=(options.dt_init_min, options.dt_init_max),
                                           conv_init=options.conv_init)
        if options.init_from_attention:
            if t_block.kind != "attention":
                raise RecipeError([f"student.options.init_from_attention: teacher layer {t_block.layer_idx} "
                                   f"has no attention to initialise from; set it to false"])
            init_ssm_from_attention(s_block.mixer, t_block.mixer)


def _check_ranges(options: SSMInitOptions) -> None:
    if options.a_init_min > options.a_init_max or options.dt_init_min > options.dt_init_max:
        raise RecipeError(["student.options: a_init_min/dt_init_min must not exceed a_init_max/dt_init_max"])


class TransformerStudent:
    """The teacher's own architecture (all attention), weights copied: baselines and from-scratch teachers."""

    @dataclass
    class Options:
        """No options: the student is a copy of the teacher."""

    def build(self, teacher: ThinkfastLM, options: Options | None = None) -> ThinkfastLM:
        config = teacher.config.replace(mixers=["attention"] * teacher.config.num_layers, ssm=None,
                                        student="transformer")
        return new_student(teacher, config)


class MambaInLlamaStudent:
    """Hybrid: chosen layers keep the teacher's attention, the others get a Mamba-2 mixer initialised from it
    (C <- W_q, B <- W_k and x <- W_v at KV-head size repeated GQA-style, out_proj <- W_o, d_state = head_dim)."""

    @dataclass
    class Options(SSMInitOptions):
        attention_layers: list[int] = option(
            [], "Indices of the layers that keep attention; when empty, `attention_fraction` decides.")
        attention_fraction: float = option(
            0.5, "Fraction of layers that keep attention, spread evenly from layer 0 (used when "
            "`attention_layers` is empty).", min=0.0, max=1.0)

    def build(self, teacher: ThinkfastLM, options: Options | None = None) -> ThinkfastLM:
        options = options or self.Options()
        _check_ranges(options)
        t = teacher.config
        keep = options.attention_layers or evenly_spaced_layers(t.num_layers, options.attention_fraction)
        bad = [i for i in keep if not 0 <= i < t.num_layers]
        if bad:
            raise RecipeError([f"student.options.attention_layers: {bad} out of range for a teacher with "
                               f"{t.num_layers} layers (valid: 0..{t.num_layers - 1})"])
        ssm = SSMConfig(
            num_heads=t.num_heads, head_dim=t.head_dim, state_size=t.head_dim, num_x_heads=t.num_kv_heads,
            num_b_groups=t.num_kv_heads, num_c_groups=t.num_heads, conv_kernel=options.conv_kernel,
            activation=options.activation, gate=options.gate, norm=options.norm, chunk_size=options.chunk_size,
            proj_bias=t.attention_bias)
        mixers = ["attention" if i in set(keep) else "ssm" for i in range(t.num_layers)]
        student = new_student(teacher, t.replace(mixers=mixers, ssm=ssm, student="mambainllama"))
        _init_ssm_layers(student, teacher, options)
        return student


class LlambaStudent:
    """Pure SSM (Llamba / MOHAWK): every mixer is a multi-head Mamba-2, initialised from attention where the
    shapes allow (per-head slices are copied, extra heads repeat, extra rows stay random)."""

    @dataclass
    class Options(SSMInitOptions):
        state_size: int = option(0, "SSM state size per head (d_state); 0 = the teacher's head_dim.", min=0)
        num_heads: int = option(0, "SSM heads; 0 = the teacher's attention heads.", min=0)
        expand: float = option(1.0, "Inner width = expand * hidden_size; head_dim = inner / num_heads.",
                               min=0.125, max=8.0)
        num_x_heads: int = option(0, "Distinct x (value) heads, repeated to num_heads; 0 = num_heads.", min=0)
        num_bc_groups: int = option(0, "Distinct B/C groups (qk heads), repeated to num_heads; 0 = num_heads.",
                                    min=0)
        activation: str = option("identity", "Activation after the conv: 'silu' or 'identity' (Llamba).",
                                 choices=ACTIVATIONS)
        norm: bool = option(False, "RMSNorm over the SSM output before out_proj (Llamba has none).")

    def build(self, teacher: ThinkfastLM, options: Options | None = None) -> ThinkfastLM:
        options = options or self.Options()
        _check_ranges(options)
        t = teacher.config
        heads = options.num_heads or t.num_heads
        inner = round(options.expand * t.hidden_size)
        problems = []
        if inner % heads:
            problems.append(f"student.options: expand * hidden_size = {inner} is not divisible by num_heads = "
                            f"{heads}; change expand or num_heads")
        x_heads, groups = options.num_x_heads or heads, options.num_bc_groups or heads
        for key, value in (("num_x_heads", x_heads), ("num_bc_groups", groups)):
            if heads % value:
                problems.append(f"student.options.{key} = {value} must divide num_heads = {heads}")
        if problems:
            raise RecipeError(problems)
        ssm = SSMConfig(
            num_heads=heads, head_dim=inner // heads, state_size=options.state_size or t.head_dim,
            num_x_heads=x_heads, num_b_groups=groups, num_c_groups=groups, conv_kernel=options.conv_kernel,
            activation=options.activation, gate=options.gate, norm=options.norm, chunk_size=options.chunk_size,
            proj_bias=t.attention_bias)
        student = new_student(teacher, t.replace(mixers=["ssm"] * t.num_layers, ssm=ssm, student="llamba"))
        _init_ssm_layers(student, teacher, options)
        return student


@hookimpl
def register_students(register):
    """The three built-in students."""
    register("transformer", TransformerStudent)
    register("mambainllama", MambaInLlamaStudent)
    register("llamba", LlambaStudent)
