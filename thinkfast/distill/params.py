"""Parameter groups and layer subsets: which student parameters a stage trains.

Every parameter of a student falls in exactly one group, decided by its qualified name:

=============  ==============================================================
group          parameters
=============  ==============================================================
``mixers``     ``layers.<i>.mixer.*`` (attention or SSM)
``mlps``       ``layers.<i>.mlp.*``
``norms``      any name with a ``norm`` component (per-layer and final RMSNorms)
``embeddings`` any name with an ``embed`` component (with tied embeddings, also the output head)
``lm_head``    ``lm_head.*`` (untied output head)
=============  ==============================================================

``all`` names every group. A non-empty layer subset restricts the per-layer parameters
(``layers.<i>.*``) to those layers; parameters outside the layers (embeddings, final norm,
head) follow the groups alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

GROUPS = ("mixers", "mlps", "norms", "embeddings", "lm_head")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_index(name: str) -> int | None:
    """The layer a parameter name belongs to (``layers.3.mlp.up.weight`` -> 3), or None."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def param_group(name: str) -> str:
    """The group of a parameter, from its qualified name (see the module docstring)."""
    parts = name.split(".")
    if "mixer" in parts:
        return "mixers"
    if "mlp" in parts:
        return "mlps"
    if any("norm" in p for p in parts):
        return "norms"
    if any("embed" in p for p in parts):
        return "embeddings"
    if "lm_head" in parts:
        return "lm_head"
    if layer_index(name) is not None:
        return "mixers"  # any other per-layer parameter belongs to the sequence mixer
    raise ValueError(f"cannot tell the parameter group of {name!r}; expected one of {', '.join(GROUPS)}")


def expand_groups(groups: Iterable[str]) -> set[str]:
    """``["all"]`` -> every group; other names are checked and kept."""
    out: set[str] = set()
    for group in groups:
        if group == "all":
            out.update(GROUPS)
        elif group in GROUPS:
            out.add(group)
        else:
            raise ValueError(f"unknown parameter group {group!r}; choose from {', '.join(GROUPS)}, all")
    return out


def is_trainable(name: str, groups: set[str], layers: set[int]) -> bool:
    """Whether parameter ``name`` trains, given expanded ``groups`` and a layer subset (empty: all)."""
    if param_group(name) not in groups:
        return False
    index = layer_index(name)
    return not layers or index is None or index in layers


def set_trainable(model: nn.Module, groups: Iterable[str], layers: Iterable[int] = ()) -> list[str]:
    """Set ``requires_grad`` on every parameter of ``model``; return the names that train, in order."""
    expanded, layer_set = expand_groups(groups), set(layers)
    trained = []
    for name, param in model.named_parameters():
        train = is_trainable(name, expanded, layer_set)
        param.requires_grad_(train)
        if train:
            trained.append(name)
    return trained
