"""Recipe loading and validation: every problem reported once, with file, key path and a fix."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from thinkfast.config.loader import load_recipe, parse_overrides
from thinkfast.config.toml_writer import dumps
from thinkfast.config.validate import to_dict
from thinkfast.errors import RecipeError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path, overrides=()) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return info.value.problems


def test_defaults_load_without_a_file():
    recipe = load_recipe(None)
    assert recipe.run.seed == 0
    assert recipe.generate.n_samples >= 1


def test_misspelled_key_names_file_path_and_suggestion(tmp_path):
    path = write(tmp_path, "r.toml", """
        [generate]
        n_sampels = 4
    """)
    (msg,) = problems_of(path)
    assert str(path) in msg
    assert "generate.n_sampels" in msg
    assert "did you mean 'n_samples'" in msg


def test_wrong_type_and_out_of_range_are_each_reported(tmp_path):
    path = write(tmp_path, "r.toml", """
        [run]
        seed = "zero"
        [generate]
        temperature = -1.0
        top_p = 2
    """)
    problems = problems_of(path)
    assert len(problems) == 3
    joined = "\n".join(problems)
    assert "run.seed: expected an integer, got 'zero'" in joined
    assert "generate.temperature: -1.0 is below the minimum 0.0" in joined
    assert "generate.top_p: 2 is above the maximum 1.0" in joined


def test_bad_choice_suggests_the_closest(tmp_path):
    path = write(tmp_path, "r.toml", """
        [run]
        dtype = "bfloat61"
    """)
    (msg,) = problems_of(path)
    assert "run.dtype" in msg and "did you mean 'bfloat16'" in msg


def test_unknown_plugin_name_lists_installed(tmp_path):
    path = write(tmp_path, "r.toml", """
        [generate.data]
        dataset = "no-such-dataset"
    """)
    (msg,) = problems_of(path)
    assert "generate.data.dataset" in msg
    assert "no datasets plugin named 'no-such-dataset'" in msg
    assert "installed:" in msg


def test_not_toml_names_the_file(tmp_path):
    path = write(tmp_path, "r.toml", "[run\nname = 1\n")
    (msg,) = problems_of(path)
    assert str(path) in msg and "not valid TOML" in msg


def test_missing_file(tmp_path):
    (msg,) = problems_of(tmp_path / "nope.toml")
    assert "not found" in msg


def test_include_merges_tables_and_lets_the_including_file_win(tmp_path):
    write(tmp_path, "base.toml", """
        [run]
        name = "base"
        seed = 3
        [generate]
        n_samples = 4
        temperature = 0.5
    """)
    path = write(tmp_path, "child.toml", """
        include = ["base.toml"]
        [generate]
        n_samples = 16
    """)
    recipe = load_recipe(path)
    assert recipe.run.name == "base" and recipe.run.seed == 3
    assert recipe.generate.n_samples == 16 and recipe.generate.temperature == 0.5


def test_include_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.toml", 'include = "b.toml"\n')
    path = write(tmp_path, "b.toml", 'include = "a.toml"\n')
    (msg,) = problems_of(path)
    assert "cycle" in msg


def test_missing_include(tmp_path):
    path = write(tmp_path, "a.toml", 'include = "gone.toml"\n')
    (msg,) = problems_of(path)
    assert "'gone.toml' not found" in msg


def test_overrides_parse_toml_values_and_bare_words():
    assert parse_overrides(["generate.n_samples=16", "run.name=demo", 'generate.stop=["\\n\\n"]']) == {
        "generate": {"n_samples": 16, "stop": ["\n\n"]},
        "run": {"name": "demo"},
    }
    with pytest.raises(RecipeError, match="KEY.PATH=VALUE"):
        parse_overrides(["generate.n_samples"])


def test_overrides_reach_into_lists_of_tables(tmp_path):
    path = write(tmp_path, "r.toml", """
        [[distill.stages]]
        name = "a"
        steps = 3
        [[distill.stages]]
        name = "b"
        steps = 4
        """)
    recipe = load_recipe(path, ["distill.stages[1].steps=9", "distill.stages.0.lr=0.5"])
    assert [(s.name, s.steps) for s in recipe.distill.stages] == [("a", 3), ("b", 9)]
    assert recipe.distill.stages[0].lr == 0.5 and recipe.distill.stages[1].lr != 0.5
    for item, message in [("distill.stages[2].steps=1", "has 2 entries (indices 0 to 1)"),
                          ("run[0].name=x", "run is not a list"),
                          ("distill.stages[0]steps=1", "write a list index as [N] or .N")]:
        with pytest.raises(RecipeError, match=re.escape(message)):
            load_recipe(path, [item])


def test_a_key_of_other_digits_is_a_key_not_an_index():
    assert parse_overrides(["data.options.\u00b2=1"]) == {"data": {"options": {"\u00b2": 1}}}


def test_overrides_beat_the_file_and_are_validated(tmp_path):
    path = write(tmp_path, "r.toml", "[generate]\nn_samples = 4\n")
    assert load_recipe(path, ["generate.n_samples=32"]).generate.n_samples == 32
    (msg,) = problems_of(path, ["generate.n_samples=0"])
    assert msg == "--set 'generate.n_samples=0': 0 is below the minimum 1"


def test_a_bad_override_names_the_override_not_the_file(tmp_path):
    """A --set value that is not valid is reported against the override (its key and value), while the
    file's own problems still name the file."""
    path = write(tmp_path, "r.toml", "[generate]\ntemperature = -1\n[[distill.stages]]\nname = \"a\"\nsteps = 3\n")
    problems = problems_of(path, ["generate.n_samples=abc", "generate.top_p=2", "generate.temprature=1",
                                  "generate.data={ limit = -1 }", "distill.stages.0.lr=abc",
                                  "generate.data.options.hub_id=3"])
    unknown = [p for p in problems if "unknown key" in p]
    assert len(unknown) == 1 and unknown[0].startswith(
        "--set 'generate.temprature=1': unknown key (did you mean 'temperature'?); valid keys here: model, ")
    assert sorted(p for p in problems if "unknown key" not in p) == sorted([
        "--set 'generate.n_samples=abc': expected an integer, got 'abc'",
        "--set 'generate.top_p=2': 2 is above the maximum 1.0",
        "--set 'generate.data={ limit = -1 }': generate.data.limit: -1 is below the minimum 0",
        "--set 'distill.stages.0.lr=abc': expected a number, got 'abc'",
        "--set 'generate.data.options.hub_id=3': expected a string, got 3",
        f"{path}: generate.temperature: -1 is below the minimum 0.0",
    ])
    # without a file, and with the same key set twice: the override that is in effect is named
    (msg,) = problems_of(None, ["generate.n_samples=4", "generate.n_samples=0"])
    assert msg == "--set 'generate.n_samples=0': 0 is below the minimum 1"
    # a table override names only the keys it sets; a key set by a later override is that one's
    (msg,) = problems_of(None, ["generate.data.limit=-2", "generate.data={ split = 'train' }"])
    assert msg == "--set 'generate.data.limit=-2': -2 is below the minimum 0"


def test_shown_recipe_reloads_to_the_same_config(tmp_path):
    path = write(tmp_path, "r.toml", """
        [run]
        name = "x"
        [generate]
        stop = ["Question:"]
    """)
    recipe = load_recipe(path)
    shown = write(tmp_path, "shown.toml", dumps(to_dict(recipe)))
    assert to_dict(load_recipe(shown)) == to_dict(recipe)


def test_partial_section_keeps_its_sections_defaults():
    """generate.data defaults to gsm8k/test: setting one key must not fall back to the class defaults."""
    data = load_recipe(None, ["generate.data.limit=5"]).generate.data
    assert (data.dataset, data.split, data.limit) == ("gsm8k", "test", 5)
    data = load_recipe(None, ["generate.data.dataset=synthetic-arith"]).generate.data
    assert (data.dataset, data.split) == ("synthetic-arith", "test")


def test_bad_device_names_are_clean_errors():
    from thinkfast.devices import resolve_device
    from thinkfast.errors import ThinkfastError

    with pytest.raises(ThinkfastError, match="'gpu' is not a device name"):
        resolve_device("gpu")
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize("make, expected", [
    (lambda d: d, "is a directory, not a recipe file"),
    (lambda d: (d / "r.toml").write_bytes(b"[run]\nname = 'caf\xe9'\n") and d / "r.toml",
     ":2: not UTF-8 text (byte 0xe9)"),
    (lambda d: (d / "r.toml").write_bytes(b"\xef\xbb\xbf[run]\n\xff\n") and d / "r.toml",  # after a BOM
     ":2: not UTF-8 text (byte 0xff)"),
], ids=["directory", "not-utf8", "not-utf8-after-bom"])
def test_a_recipe_that_cannot_be_read_as_text_names_the_file(tmp_path, make, expected):
    path = make(tmp_path)
    (msg,) = problems_of(path)
    assert msg.startswith(f"{path}") and expected in msg
    include = write(tmp_path, "inc.toml", f'include = "{path}"\n')
    (msg,) = problems_of(include)
    assert str(path) in msg and expected in msg


def test_cross_field_checks_skip_values_that_failed_their_type_check(tmp_path):
    """``profile.check`` compares sizes with 1; a string among them was a TypeError traceback."""
    path = write(tmp_path, "p.toml", '[profile]\nseqlen = ["8q"]\nbatch = 0\n')
    assert sorted(problems_of(path)) == [  # sizes are parsed as the flags parse them (8k), then checked
        f"{path}: profile.batch: batch 0 is below the minimum 1",
        f"{path}: profile.seqlen: seqlen '8q' is not a size; write an integer, optionally with k (x1024) or m, "
        f"e.g. 512, 8k, 32k"]


def test_options_of_a_plugin_without_options_say_so(tmp_path):
    path = write(tmp_path, "r.toml", '[[evaluate.aggregators]]\nname = "majority"\noptions = { foo = 1 }\n')
    assert problems_of(path) == [f"{path}: evaluate.aggregators[0].options.foo: unknown key; "
                                 f"this table takes no keys"]


def test_a_recipe_saved_with_a_byte_order_mark_is_read(tmp_path):
    """Editors that save UTF-8 with a BOM (data files already accept one) made a recipe 'not valid TOML:
    Invalid statement (at line 1, column 1)'."""
    path = tmp_path / "r.toml"
    path.write_bytes(b"\xef\xbb\xbf[generate]\nn_samples = 4\n")
    assert load_recipe(path).generate.n_samples == 4
