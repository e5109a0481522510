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


def _reference_tables(text: str) -> list[list[str]]:
    """The markdown tables of ``text``: each a list of its lines, from the header row to the last row."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("| key | type | default | meaning |"):
            current = [line]
            tables.append(current)
        elif current is not None and line.strip():
            current.append(line)
        else:
            current = None
    return tables


def test_recipe_reference_defaults_are_toml_a_recipe_can_take_on_one_row():
    """Every table row of the reference is one line, and its default is written as TOML (what `recipe show`
    prints and a recipe may hold), so a multi-line default (the verifier's prompt) cannot end the table and a
    regular expression (the reward model's step_separator) is not shown with escapes TOML refuses."""
    import tomllib

    tables = _reference_tables(docsgen.recipe_reference())
    assert len(tables) > 10
    for table in tables:
        for row in table[2:]:
            assert row.startswith("| `") and row.endswith(" |"), f"a row broken over lines: {row!r}"
            key, _type, default = (cell.strip() for cell in row[1:].split(" | ")[:3])
            if default in ("(table)", "(see below)", "required"):
                continue
            assert default.startswith("`") and default.endswith("`"), row
            tomllib.loads(f"value = {default[1:-1]}")  # raises on a default a recipe could not hold


def test_recipe_reference_sections_do_not_open_with_a_dataclass_signature():
    """A plugin's Options without a docstring gets no intro line, rather than the signature dataclasses make up
    (``Options(conv_kernel: 'int' = 4, ...)``)."""
    import re

    text = docsgen.recipe_reference()
    assert not re.search(r"^\w+\(\w+: '", text, re.M)
