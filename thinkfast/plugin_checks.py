"""What the registry checks while it loads a plugin, before any command uses it.

Each check returns a sentence for a :class:`~thinkfast.registry.LoadError` (what is wrong and the fix), or
None when all is well. A plugin author meets these as ``warning:`` lines and in ``thinkfast plugins``:

- :func:`import_failure`: an entry point whose module cannot be imported: where in the plugin's code it failed,
  and, for a module that does not exist, whether the entry point is wrong or a dependency is missing;
- :func:`hook_problems`: functions that look like hooks but are not (a misspelt ``@hookimpl`` function, a
  ``register_<family>`` function without ``@hookimpl``, a module with no hook at all), which pluggy ignores;
- :func:`name_problem`: a registered name that recipes cannot use;
- :func:`options_problem`: an ``Options`` that is not a dataclass, or whose defaults break its own rules (a
  default below its ``min``, of the wrong type, not among its ``choices``): every recipe that leaves the
  options out would otherwise be refused with a message about keys the user never wrote, or meet a traceback.
"""

from __future__ import annotations

import dataclasses
import traceback
import typing
from pathlib import Path
from typing import Any

from thinkfast.hookspecs import FAMILIES
from thinkfast.suggest import did_you_mean

_HOOKS = tuple(f"register_{family}" for family in FAMILIES)
_THINKFAST_HOME = Path(__file__).resolve().parent


def import_failure(exc: BaseException, module_name: str, package: str) -> str:
    """``Type: message (at file:line)`` for an entry point's module ``module_name`` (of distribution ``package``)
    that raised on import, with the fix when the module or one it imports does not exist."""
    text = f"{type(exc).__name__}: {exc}"
    where = _plugin_line(exc)
    if where:
        text += f" (at {where})"
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if missing and (module_name == missing or module_name.startswith(f"{missing}.")):
        return (f"{text}; the entry point names module {module_name!r}, which is not installed: correct "
                f"[project.entry-points.thinkfast] in {package}'s pyproject.toml (or install its module) and "
                f"pip install the package again")
    if missing and missing.split(".")[0] == module_name.split(".")[0]:
        return f"{text}; the plugin imports its own module {missing!r}, which does not exist: fix that import"
    if missing:
        return f"{text}; install the module the plugin imports ({missing!r}), or declare it in its dependencies"
    return f"{text}; fix the plugin's module"


def _plugin_line(exc: BaseException) -> str:
    """``file:line`` of the deepest frame of the traceback outside thinkfast and the import machinery (the
    plugin's own code, or a library it imported), or the line a :class:`SyntaxError` points at."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = traceback.StackSummary.extract(traceback.walk_tb(exc.__traceback__), lookup_lines=False)
    own = [f for f in frames if not f.filename.startswith("<frozen") and "importlib" not in Path(f.filename).parts
           and not Path(f.filename).resolve().is_relative_to(_THINKFAST_HOME)]
    return f"{own[-1].filename}:{own[-1].lineno}" if own else ""


def hook_problems(manager: Any, plugin: Any) -> list[str]:
    """What is wrong with the hooks of ``plugin`` (registered with the pluggy ``manager``): functions marked
    ``@hookimpl`` under a name that is no thinkfast hook, ``register_<family>`` functions without the marker,
    or no hook at all. pluggy ignores all three without a word, so the plugin's components would be missing."""
    problems = []
    unknown = sorted(caller.name for caller in manager.get_hookcallers(plugin) or [] if caller.spec is None)
    for name in unknown:
        problems.append(f"its @hookimpl function {name} is not a thinkfast hook{did_you_mean(name, _HOOKS)}, "
                        f"so it is never called; the hooks are {', '.join(_HOOKS)}")
    for name in _HOOKS:
        value = getattr(plugin, name, None)
        if callable(value) and manager.parse_hookimpl_opts(plugin, name) is None:
            problems.append(f"its function {name} is not marked as a hook, so it is never called: decorate it "
                            f"with @hookimpl (from thinkfast.hookspecs import hookimpl)")
    if not problems and not manager.get_hookcallers(plugin):
        what = "module" if hasattr(plugin, "__file__") or hasattr(plugin, "__path__") else type(plugin).__name__
        problems.append(f"the {what} implements none of thinkfast's hooks ({', '.join(_HOOKS)}): the entry "
                        f"point must name the module that holds the @hookimpl functions")
    return problems


def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a registered name (a recipe's string), or None."""
    if not isinstance(name, str) or not name.strip():
        return (f"register(name, component) was called with name {name!r}; the name is the non-empty string "
                f"recipes use")
    return None


def options_problem(component: Any) -> str | None:
    """Why ``component.Options`` cannot validate a recipe's options table, or None (also None without
    ``Options``). Each default is checked as a recipe's value would be (type, ``min``/``max``, ``choices``);
    fields without a default (the recipe must give them) and fields naming plugins are not, and neither is
    ``check()``: its cross-field rules may ask the recipe for a value the defaults leave empty (a model)."""
    from thinkfast.config.validate import Problems, _convert

    options = getattr(component, "Options", None)
    if options is None:
        return None
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        return (f"its Options is {options!r}, not a dataclass: decorate the class with @dataclasses.dataclass and "
                f"declare its fields with thinkfast.config.option(default, help, ...)")
    problems = Problems("")
    try:
        hints = typing.get_type_hints(options)
        for f in dataclasses.fields(options):
            if not f.init or f.metadata.get("plugin"):
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                continue
            _convert(default, hints[f.name], f"Options.{f.name}", problems, dict(f.metadata))
    except Exception as exc:  # a type hint that does not resolve, a default_factory that raises
        return f"reading its Options raised {type(exc).__name__}: {exc}; fix its Options"
    if problems.items:
        return f"the defaults of its Options break its own rules ({'; '.join(problems.items)}): fix those defaults"
    return None
