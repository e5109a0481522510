"""Plugin discovery: built-ins through entry points, conflicts, broken plugins."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest

from thinkfast.config import option
from thinkfast.errors import PluginConflictError, PluginNotFoundError
from thinkfast.hookspecs import hookimpl
from thinkfast.registry import load_registry

BUILTINS = {
    "students": {"llamba", "mambainllama", "transformer"},
    "datasets": {"gsm8k", "math500", "math", "openmathinstruct2", "jsonl", "synthetic-arith"},
    "aggregators": {"majority", "reward-model", "verifier"},
    "kernels": {"torch", "sdpa", "triton", "mamba-ssm", "flash-attn"},
}


def _module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn))
    return module


def test_builtins_register_through_entry_points_as_package_thinkfast():
    registry = load_registry()
    assert not registry.load_errors, registry.load_errors
    for family, names in BUILTINS.items():
        assert names <= set(registry.names(family)), (family, registry.names(family))
        for name in names:
            entry = registry.entry(family, name)
            assert entry.package == "thinkfast"
            assert entry.module.startswith("thinkfast_plugins")


def test_unknown_name_suggests_and_lists():
    registry = load_registry()
    with pytest.raises(PluginNotFoundError) as info:
        registry.get("aggregators", "majorty")
    assert "did you mean 'majority'" in str(info.value)
    assert "installed:" in str(info.value)


def test_same_name_twice_in_a_family_names_both_packages():
    one = _module("pkg_one", register_aggregators=lambda register: register("dup", object))
    two = _module("pkg_two", register_aggregators=lambda register: register("dup", object))
    with pytest.raises(PluginConflictError) as info:
        load_registry(extra_modules=[one, two])
    assert "pkg_one" in str(info.value) and "pkg_two" in str(info.value) and "'dup'" in str(info.value)


def test_plugin_raising_during_registration_is_reported_not_fatal():
    def bad(register):
        raise RuntimeError("boom")

    good = _module("good_plugin", register_aggregators=lambda register: register("fine", object))
    broken = _module("broken_plugin", register_datasets=bad)
    registry = load_registry(extra_modules=[broken, good])
    assert "fine" in registry.names("aggregators")
    assert any("boom" in err.error for err in registry.load_errors)


@pytest.fixture
def third_party(monkeypatch):
    """One third-party entry point, ``example = fake_thinkfast_plugin`` of distribution ``thinkfast-example``."""
    from importlib import metadata

    from thinkfast import registry as registry_module

    monkeypatch.setitem(sys.modules, "fake_thinkfast_plugin", _module(
        "fake_thinkfast_plugin", register_aggregators=lambda register: register("fake", object)))
    builtins = registry_module._entry_points()
    ep = metadata.EntryPoint("example", "fake_thinkfast_plugin", "thinkfast")
    monkeypatch.setattr(registry_module, "_entry_points", lambda: [*builtins, (ep, "thinkfast-example", "1.0")])
    return monkeypatch


@pytest.mark.parametrize("allowed", ["example", "thinkfast-example", "thinkfast_example", "Thinkfast.Example"])
def test_allow_list_matches_distribution_names_as_pip_does(third_party, allowed):
    third_party.setenv("THINKFAST_PLUGINS", allowed)
    registry = load_registry()
    assert "fake" in registry.names("aggregators") and not registry.load_errors


def test_allow_list_entry_that_matches_nothing_is_reported(third_party):
    third_party.setenv("THINKFAST_PLUGINS", "example,thinkfast-exmaple")
    registry = load_registry()
    assert "fake" in registry.names("aggregators")
    (error,) = registry.load_errors
    assert error.entry_point == "THINKFAST_PLUGINS" and "'thinkfast-exmaple'" in error.error
    assert "no installed plugin" in error.error and "thinkfast-example" in error.error


def test_an_extra_module_that_an_entry_point_already_loaded_registers_once(third_party):
    """A plugin's own tests pass its module to load_registry while its source tree (egg-info) or an install
    also declares it: that was a PluginConflictError with itself."""
    registry = load_registry(extra_modules=[sys.modules["fake_thinkfast_plugin"]])
    assert registry.entry("aggregators", "fake").package == "thinkfast-example" and not registry.load_errors


def test_an_allow_list_name_that_loads_nothing_is_reported_even_when_it_resembles_an_entry_point(monkeypatch):
    """Entry-point names compare exactly (only distribution names as pip does): ``my_example`` does not
    load the entry point ``my-example`` of distribution ``other-dist``, so it must be reported, not taken
    for a match and leave the plugin out without a word."""
    from importlib import metadata

    from thinkfast import registry as registry_module

    monkeypatch.setitem(sys.modules, "fake_thinkfast_plugin", _module(
        "fake_thinkfast_plugin", register_aggregators=lambda register: register("fake", object)))
    builtins = registry_module._entry_points()
    ep = metadata.EntryPoint("my-example", "fake_thinkfast_plugin", "thinkfast")
    monkeypatch.setattr(registry_module, "_entry_points", lambda: [*builtins, (ep, "other-dist", "1.0")])
    monkeypatch.setenv("THINKFAST_PLUGINS", "my_example")
    registry = load_registry()
    assert "fake" not in registry.names("aggregators")
    (error,) = registry.load_errors
    assert error.entry_point == "THINKFAST_PLUGINS" and "'my_example'" in error.error


# --- mistakes pluggy and Python let pass: reported at load, naming the plugin and the fix ----------------------

def test_a_hook_under_a_wrong_name_is_reported_with_the_right_one():
    """pluggy registers an ``@hookimpl`` function under any name and never calls it: the plugin's components
    were missing without a word."""
    module = _module("misspelt_plugin", register_aggregator=lambda register: register("mine", object))
    (error,) = load_registry(extra_modules=[module]).load_errors
    assert error.describe().startswith("plugin misspelt_plugin from <local> has a problem with its hooks: ")
    assert "register_aggregator is not a thinkfast hook (did you mean 'register_aggregators'?)" in error.error


def test_a_hook_function_without_hookimpl_is_reported():
    module = types.ModuleType("unmarked_plugin")
    module.register_datasets = lambda register: register("mine", object)
    (error,) = load_registry(extra_modules=[module]).load_errors
    assert "register_datasets is not marked as a hook" in error.error and "@hookimpl" in error.error


def test_a_module_without_any_hook_is_reported():
    """An entry point naming the package while its hooks live in a submodule that nothing imports."""
    (error,) = load_registry(extra_modules=[types.ModuleType("hookless_plugin")]).load_errors
    assert "implements none of thinkfast's hooks" in error.error and "the entry point must name the module" in \
        error.error


def test_a_name_that_is_not_a_string_or_is_registered_twice_is_refused_not_fatal():
    """``register(3, ...)`` went into the registry and every listing (``thinkfast plugins``) crashed sorting the
    names; one module registering a name twice was a conflict that stopped every command, telling the user to
    uninstall one of two packages that are one."""
    def hook(register):
        register(3, object)
        register("twice", object)
        register("twice", object)

    registry = load_registry(extra_modules=[_module("sloppy_plugin", register_aggregators=hook)])
    assert "twice" in registry.names("aggregators") and registry.all_entries()
    not_a_string, twice = (e.error for e in registry.load_errors)
    assert "register(name, component) was called with name 3; the name is the non-empty string" in not_a_string
    assert "registers the aggregators name 'twice' twice; the first is used: register each name once" in twice


@dataclass
class NegativeDefault:
    power: float = option(-1.0, "Exponent.", min=0.0)


@dataclass
class ModelToBeGiven:
    """A default that only the recipe can complete: check() asks for it, which is no fault of the defaults."""

    model: str = option("", "Scoring model.")
    mode: str = option("sum", "How to combine.", choices=("sum", "max"))

    def check(self):
        return [] if self.model else [("model", "set a model")]


@dataclass
class Required:
    model: str = option(help="Scoring model; no default: every recipe gives one.")


class _WithOptions:
    def __init__(self, options=None):
        self.options = options


def _with(options_cls):
    return type(f"With{getattr(options_cls, '__name__', 'Options')}", (_WithOptions,), {"Options": options_cls})


class UndecoratedOptions:
    power = 1.0


@pytest.mark.parametrize("options_cls, fragment", [
    (NegativeDefault, "the defaults of its Options break its own rules (Options.power: -1.0 is below the minimum "
                      "0.0): fix those defaults"),
    (UndecoratedOptions, "its Options is <class 'test_registry.UndecoratedOptions'>, not a dataclass: decorate"),
], ids=["default-below-min", "not-a-dataclass"])
def test_a_component_whose_options_are_broken_is_refused_and_the_lookup_says_why(options_cls, fragment):
    """Broken defaults refused every recipe that left the options out, blaming keys the user never wrote
    (``options.power: -1.0 is below the minimum``); an Options that is no dataclass was a traceback."""
    registry = load_registry(extra_modules=[_module("opts_plugin", register_aggregators=lambda register: (
        register("broken", _with(options_cls)), register("fine", _with(ModelToBeGiven)),
        register("required", _with(Required))))])
    assert {"fine", "required"} <= set(registry.names("aggregators")) and "broken" not in registry.names("aggregators")
    (error,) = registry.load_errors
    assert error.one_name and fragment in error.error
    with pytest.raises(PluginNotFoundError) as info:
        registry.entry("aggregators", "broken")
    assert str(info.value).startswith("no aggregators plugin named 'broken': <local> registers it, but the "
                                      "aggregators component 'broken' (test_registry.")
    assert fragment in str(info.value)


def test_an_entry_point_naming_a_missing_module_says_to_correct_it_and_the_traceback_is_there_on_request(
        monkeypatch, capsys):
    from importlib import metadata

    from thinkfast import registry as registry_module

    builtins = registry_module._entry_points()
    ep = metadata.EntryPoint("example", "thinkfast_example.no_such_module", "thinkfast")
    monkeypatch.setattr(registry_module, "_entry_points", lambda: [*builtins, (ep, "thinkfast-example", "1.0")])
    (error,) = load_registry().load_errors
    assert error.error.startswith("ModuleNotFoundError: No module named 'thinkfast_example'")
    assert "the entry point names module 'thinkfast_example.no_such_module', which is not installed: correct " \
           "[project.entry-points.thinkfast] in thinkfast-example's pyproject.toml" in error.error

    monkeypatch.setenv("THINKFAST_TRACEBACK", "1")
    before = registry_module.set_registry(None)
    try:
        registry_module.get_registry()
    finally:
        registry_module.set_registry(before)
    stderr = capsys.readouterr().err
    assert stderr.index("Traceback (most recent call last)") < stderr.index("warning: plugin example = ")
