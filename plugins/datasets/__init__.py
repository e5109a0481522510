"""Built-in dataset plugins: gsm8k, math500, math, openmathinstruct2, jsonl, synthetic-arith."""

from thinkfast_plugins.datasets.competition_math import Math500, MathDataset
from thinkfast_plugins.datasets.gsm8k import GSM8K
from thinkfast_plugins.datasets.jsonl import JsonlDataset
from thinkfast_plugins.datasets.openmathinstruct import OpenMathInstruct2
from thinkfast_plugins.datasets.synthetic_arith import SyntheticArith

from thinkfast.hookspecs import hookimpl

BUILTIN = {
    "gsm8k": GSM8K,
    "math500": Math500,
    "math": MathDataset,
    "openmathinstruct2": OpenMathInstruct2,
    "jsonl": JsonlDataset,
    "synthetic-arith": SyntheticArith,
}


@hookimpl
def register_datasets(register):
    """Register the built-in dataset plugins."""
    for name, cls in BUILTIN.items():
        register(name, cls)
