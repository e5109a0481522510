"""The plugin contract: one pluggy hook per component family.

A plugin module implements any of these hooks with :data:`hookimpl` and calls ``register``
once per component it provides::

    from thinkfast.hookspecs import hookimpl

    @hookimpl
    def register_aggregators(register):
        register("best-of-two", BestOfTwo)

``register(name, component)`` takes the name recipes use and the component itself (for
students, datasets and aggregators a class; for kernels a kernel-set class). What each family's
component must provide is documented in ``docs/plugins.md``.

Modules are found through the ``thinkfast`` entry-point group (``[project.entry-points.thinkfast]``).
"""

from __future__ import annotations

import pluggy

PROJECT = "thinkfast"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: The component families, in the order ``thinkfast plugins`` lists them.
FAMILIES = ("students", "datasets", "aggregators", "kernels")


@hookspec
def register_students(register):
    """Register student model builders (``llamba``, ``mambainllama``, ``transformer``...)."""


@hookspec
def register_datasets(register):
    """Register dataset plugins (``gsm8k``, ``synthetic-arith``, ``jsonl``...)."""


@hookspec
def register_aggregators(register):
    """Register answer aggregators (``majority``, ``reward-model``, ``verifier``...)."""


@hookspec
def register_kernels(register):
    """Register kernel sets (``torch``, ``mamba-ssm``, ``sdpa``, ``flash-attn``...)."""
