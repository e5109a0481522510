"""The generated reference pages match the code (so the docs cannot drift)."""

from __future__ import annotations

from thinkfast import docsgen


def test_generated_pages_are_current():
    for name, build in docsgen.PAGES.items():
        committed = (docsgen.DOCS / name).read_text()
        assert committed == build(), f"docs/{name} is stale: run `python -m thinkfast.docsgen`"


def test_recipe_reference_lists_every_section_and_builtin_plugin_options():
    text = docsgen.recipe_reference()
    for section in ("`run`", "`teacher`", "`student`", "`kernels`", "`distill`", "`[distill.stages]`",
                    "`generate`", "`evaluate`", "`profile`"):
        assert f"## {section}" in text, section
    for plugin in ("students: llamba", "students: mambainllama", "datasets: gsm8k", "aggregators: reward-model"):
        assert f"### `{plugin}`" in text, plugin
