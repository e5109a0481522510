"""Plugin discovery: built-ins through entry points, conflicts, broken plugins."""

from __future__ import annotations

import sys
import types

import pytest

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
