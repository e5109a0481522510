"""Discovering, loading and looking up plugins.

Plugins come from the ``thinkfast`` entry-point group. The built-in ones (in this project's
``plugins/`` folder, imported as ``thinkfast_plugins``) register through that group too, exactly
as a third-party package does. ``THINKFAST_PLUGINS`` (comma-separated entry-point or
distribution names) restricts which third-party entry points load; set but empty, only the
built-ins load; distribution names compare as pip compares them, and a name that matches
nothing is reported. A plugin that fails on import or registration becomes a :class:`LoadError`,
shown as a warning and by ``thinkfast plugins``; the rest keep working. So do the mistakes pluggy and Python
would let pass without a word (:mod:`thinkfast.plugin_checks`): a hook under a wrong name, a name registered
twice or not a string, an ``Options`` whose defaults break its own rules (that component is not registered,
and a command that names it says why).
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from thinkfast import hookspecs
from thinkfast.errors import PluginConflictError, PluginNotFoundError
from thinkfast.hookspecs import FAMILIES
from thinkfast.plugin_checks import hook_problems, import_failure, name_problem, options_problem
from thinkfast.plugin_guard import traceback_wanted
from thinkfast.suggest import did_you_mean

ENTRY_POINT_GROUP = "thinkfast"
BUILTIN_DISTRIBUTION = "thinkfast"
ALLOW_LIST_ENV = "THINKFAST_PLUGINS"


@dataclass(frozen=True)
class PluginEntry:
    """One registered component."""

    family: str
    name: str
    component: Any
    package: str
    version: str
    module: str

    @property
    def source(self) -> str:
        """The providing package and its version, for messages."""
        return _source(self.package, self.version)


@dataclass(frozen=True)
class LoadError:
    """A plugin module that could not be imported or failed while registering."""

    entry_point: str
    package: str
    version: str
    error: str
    detail: str
    #: Only one name was refused (it clashes with a built-in, or its component is broken); the plugin's other
    #: components loaded.
    one_name: bool = False
    #: The family and name refused (with ``one_name``), so that a command naming it can say why it is missing.
    family: str = ""
    name: str = ""
    #: The plugin loaded, but one of its hook functions is never called (a wrong name, no ``@hookimpl``), or it
    #: has no hook at all.
    hook: bool = False

    def describe(self) -> str:
        """One sentence for the terminal (a problem with ``THINKFAST_PLUGINS`` itself has no package)."""
        if not self.package:
            return f"{self.entry_point}: {self.error}"
        what = "loaded all but one name" if self.one_name else "has a problem with its hooks" if self.hook \
            else "failed to load"
        return f"plugin {self.entry_point} from {_source(self.package, self.version)} {what}: {self.error}"


@dataclass
class Registry:
    """Every loaded component, by family and name, plus what failed to load."""

    entries: dict[str, dict[str, PluginEntry]] = field(
        default_factory=lambda: {family: {} for family in FAMILIES}
    )
    load_errors: list[LoadError] = field(default_factory=list)

    def names(self, family: str) -> list[str]:
        """Registered names in ``family``, sorted."""
        return sorted(self.entries[family])

    def entry(self, family: str, name: str) -> PluginEntry:
        """The entry for ``name``; :class:`PluginNotFoundError` lists what is installed."""
        try:
            return self.entries[family][name]
        except KeyError:
            raise PluginNotFoundError(self.not_found(family, name)) from None

    def not_found(self, family: str, name: str) -> str:
        """Why no component ``name`` is in ``family``: the plugin that registered it but had it refused (and
        why), else what is installed, a close name, and how many plugins failed to load."""
        refused = next((e for e in self.load_errors if e.one_name and (e.family, e.name) == (family, name)), None)
        if refused is not None:
            source = _source(refused.package, refused.version)
            return f"no {family} plugin named '{name}': {source} registers it, but {refused.error}"
        installed = ", ".join(self.names(family)) or "none"
        failed = [e for e in self.load_errors if e.package and not e.one_name]
        note = (f"; {len(failed)} plugin{'s' if len(failed) > 1 else ''} could not register everything (warnings "
                f"above, `thinkfast plugins`)") if failed else ""
        close = did_you_mean(name, self.names(family))
        return f"no {family} plugin named '{name}'{close}; installed: {installed}{note}"

    def get(self, family: str, name: str) -> Any:
        """The registered component (class or object) for ``name``."""
        return self.entry(family, name).component

    def all_entries(self) -> list[PluginEntry]:
        return [e for family in FAMILIES for e in sorted(self.entries[family].values(), key=lambda e: e.name)]

    def add(self, family: str, name: str, component: Any, package: str, version: str, module: str) -> None:
        existing = self.entries[family].get(name)
        if existing is not None:
            raise PluginConflictError(
                f"two plugins register the {family} name '{name}': "
                f"{existing.source} ({existing.module}) and "
                f"{_source(package, version)} ({module}); uninstall one of them or restrict THINKFAST_PLUGINS"
            )
        self.entries[family][name] = PluginEntry(family, name, component, package, version, module)


def describe_component(component: Any) -> str:
    """``module.Class`` of a registered component, for messages."""
    return f"{getattr(component, '__module__', '?')}.{getattr(component, '__qualname__', type(component).__name__)}"


def _source(package: str, version: str) -> str:
    """``thinkfast-example 0.2.0``, or ``<local>`` for a module registered at runtime (no version)."""
    return f"{package} {version}".strip()


def _normalized(name: str) -> str:
    """A distribution name as pip compares them: ``Thinkfast_Example`` = ``thinkfast-example`` (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _allow_list() -> list[str] | None:
    """The names in ``THINKFAST_PLUGINS`` (None when it is not set)."""
    raw = os.environ.get(ALLOW_LIST_ENV)
    return None if raw is None else [item.strip() for item in raw.split(",") if item.strip()]


def _allowed(ep: metadata.EntryPoint, dist_name: str, allow: list[str] | None) -> bool:
    if dist_name == BUILTIN_DISTRIBUTION or allow is None:
        return True
    return ep.name in allow or _normalized(dist_name) in {_normalized(a) for a in allow}


def _unmatched(allow: list[str] | None, found: list[tuple[metadata.EntryPoint, str, str]]) -> LoadError | None:
    """A :class:`LoadError` for allow-list names that no third-party entry point or distribution has (a typo
    there would otherwise hide the plugin without a word)."""
    third_party = [(ep.name, dist) for ep, dist, _ in found if dist != BUILTIN_DISTRIBUTION]
    names, dists = {name for name, _ in third_party}, {_normalized(dist) for _, dist in third_party}
    missing = [a for a in allow or [] if a not in names and _normalized(a) not in dists]  # as _allowed matches
    if not missing:
        return None
    installed = ", ".join(sorted({dist for _, dist in third_party})) or "none"
    return LoadError(ALLOW_LIST_ENV, "", "", f"{', '.join(map(repr, missing))}: no installed plugin has that "
                     f"entry-point or distribution name (third-party distributions: {installed})", "")


def _entry_points() -> list[tuple[metadata.EntryPoint, str, str]]:
    """(entry point, distribution name, version), built-ins first, de-duplicated."""
    found: dict[tuple[str, str], tuple[metadata.EntryPoint, str, str]] = {}
    for dist in metadata.distributions():
        dist_name = dist.metadata["Name"] or "unknown"
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                found.setdefault((dist_name, ep.name), (ep, dist_name, dist.version))
    return sorted(found.values(), key=lambda item: (item[1] != BUILTIN_DISTRIBUTION, item[1], item[0].name))


def load_registry(extra_modules: list[Any] | None = None) -> Registry:
    """Import every allowed entry point and collect what it registers.

    ``extra_modules`` (objects with hook implementations) are registered too, as package
    ``"<local>"``; tests and embedding applications use it.
    """
    registry = Registry()
    sources: list[tuple[str, str, str, Any]] = []  # (label, package, version, module object)
    found, allow = _entry_points(), _allow_list()
    if (unmatched := _unmatched(allow, found)) is not None:
        registry.load_errors.append(unmatched)
    for ep, dist_name, version in found:
        if not _allowed(ep, dist_name, allow):
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not take the CLI down (SyntaxError included)
            registry.load_errors.append(
                LoadError(f"{ep.name} = {ep.value}", dist_name, version, import_failure(exc, ep.module, dist_name),
                          traceback.format_exc())
            )
            continue
        sources.append((f"{ep.name} = {ep.value}", dist_name, version, module))
    for module in extra_modules or []:
        if any(module is loaded for *_, loaded in sources):
            continue  # its entry point (an install, or the egg-info of its source tree) already loaded it
        sources.append((getattr(module, "__name__", repr(module)), "<local>", "", module))

    for label, package, version, module in sources:
        manager = pluggy.PluginManager(hookspecs.PROJECT)
        manager.add_hookspecs(hookspecs)
        module_name = getattr(module, "__name__", label)
        try:
            manager.register(module)
            for problem in hook_problems(manager, module):
                registry.load_errors.append(LoadError(label, package, version, problem, "", hook=True))
            for family in FAMILIES:
                hook = getattr(manager.hook, f"register_{family}")
                hook(register=_register_into(registry, family, label, package, version, module_name))
        except PluginConflictError:
            raise
        except Exception as exc:
            registry.load_errors.append(
                LoadError(label, package, version, f"{type(exc).__name__}: {exc}", traceback.format_exc())
            )
    return registry


def _register_into(registry: Registry, family: str, label: str, package: str, version: str, module: str):
    """The ``register(name, component)`` callback handed to one plugin module's hook for ``family``.

    A third-party name that a built-in already has is not registered: the built-in keeps it (built-ins
    always load and cannot be uninstalled) and the clash becomes a :class:`LoadError` of that plugin, so
    everything else keeps working and ``thinkfast plugins`` shows it.
    """

    def refuse(name: Any, error: str) -> None:
        registry.load_errors.append(LoadError(label, package, version, error, "", one_name=True, family=family,
                                              name=name if isinstance(name, str) else ""))

    def register(name: str, component: Any) -> None:
        if (problem := name_problem(name)) is not None:
            refuse(name, f"{module} {problem}")
            return
        existing = registry.entries[family].get(name)
        if existing is not None and existing.package == BUILTIN_DISTRIBUTION != package:
            refuse(name, f"PluginConflictError: {module} registers the {family} name '{name}', which is a built-in "
                         f"of thinkfast ({existing.module}); the built-in is used: rename the plugin's component")
            return
        if existing is not None and (existing.package, existing.module) == (package, module):
            refuse(name, f"{module} registers the {family} name '{name}' twice; the first is used: register each "
                         f"name once")
            return
        if (problem := options_problem(component)) is not None:
            refuse(name, f"the {family} component '{name}' ({describe_component(component)}) is not registered: "
                         f"{problem}")
            return
        registry.add(family, name, component, package, version, module)

    return register


_REGISTRY: Registry | None = None


def get_registry(announce: bool = True) -> Registry:
    """The process-wide registry, loaded on first use; then, with ``announce``, each load error is a ``warning:``
    line on stderr (``thinkfast plugins`` lists them itself)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry()
        for err in _REGISTRY.load_errors if announce else ():
            if err.detail and traceback_wanted():
                print(err.detail.rstrip(), file=sys.stderr)
            print(f"warning: {err.describe()}", file=sys.stderr)
    return _REGISTRY


def set_registry(registry: Registry | None) -> Registry | None:
    """Make ``registry`` the process-wide one (None: load it afresh on next use) and return the one before.

    With :func:`load_registry`'s ``extra_modules`` this runs plugins that are not installed: tests of a
    plugin, or an application that embeds thinkfast.
    """
    global _REGISTRY
    previous, _REGISTRY = _REGISTRY, registry
    return previous


def reset_registry() -> None:
    """Forget the cached registry (tests that change installed plugins or the environment)."""
    global _REGISTRY
    _REGISTRY = None
