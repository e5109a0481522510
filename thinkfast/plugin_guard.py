"""Naming the plugin whose code failed: what every family's guard shares.

When the core calls a plugin (creating it, asking it for problems, answers, a student, a kernel's
availability) and the call raises, the exception is turned into one :class:`PluginError` line naming the
plugin, the package that provides it, its module, what it was asked to do and the line of the plugin's own
code the exception came from, instead of a traceback. The plugin is blamed only when its code is on the
exception's traceback: an exception that never went through the plugin's files (a bug of thinkfast's own)
is raised unchanged. Errors meant for the user (:class:`~thinkfast.errors.ThinkfastError`, such as a
plugin's :class:`~thinkfast.errors.DataError` naming a bad line) and running out of memory pass through
unchanged too.

- :func:`calling` wraps one call into a plugin; :func:`checked_iter` wraps iterating over what it yields.
- :func:`plugin_error` makes the message for a result that breaks the family's contract.
- :func:`third_party_error` is the CLI's last resort for an exception raised anywhere else (a kernel's
  operation inside a model's forward pass, which is too hot to wrap): the deepest frame of a third-party
  plugin's code names the plugin.

``THINKFAST_TRACEBACK=1`` makes the CLI print the full traceback (the plugin's exception included) above the
one-line message.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thinkfast.errors import ThinkfastError

if TYPE_CHECKING:
    from thinkfast.registry import PluginEntry

#: Set to 1 (or any value but 0 / empty): the CLI prints the traceback of an error it reports in one line.
TRACEBACK_ENV = "THINKFAST_TRACEBACK"

#: What a plugin of each family is called in a message.
_KIND = {"students": "student", "datasets": "dataset", "aggregators": "aggregator", "kernels": "kernel plugin"}
#: The recipe setting that chooses a plugin of each family (the fix when the plugin is broken).
_CHOSEN_BY = {"students": "choose another student.kind", "datasets": "use another dataset",
              "aggregators": "leave it out of evaluate.aggregators",
              "kernels": "pin other kernels in [kernels] or leave the package out with THINKFAST_PLUGINS"}
_THIS_FILE = Path(__file__).resolve()
_THINKFAST_HOME = _THIS_FILE.parent


class PluginError(ThinkfastError):
    """A plugin that raised in its own code or broke its family's contract."""


def traceback_wanted() -> bool:
    """Whether ``THINKFAST_TRACEBACK`` asks for full tracebacks."""
    return os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0")


def plugin_error(entry: PluginEntry, what: str, label: str = "") -> PluginError:
    """``<kind> '<label>' (plugin '<name>') from <package version> (<module>): <what>; <fix>``.

    ``label`` is the name the user gave when it differs from the registered one (an aggregator's display
    label). The fix offered is the family's (fix the plugin or choose another one); a built-in plugin's
    failure is a bug of thinkfast, and the message says so.
    """
    from thinkfast.registry import BUILTIN_DISTRIBUTION

    label = label or entry.name
    plugin = "" if entry.name == label else f" (plugin {entry.name!r})"
    if entry.package == BUILTIN_DISTRIBUTION:
        fix = f"this is a bug of thinkfast's built-in plugin: please report it with what {TRACEBACK_ENV}=1 prints"
    else:
        fix = f"fix the plugin or {_CHOSEN_BY.get(entry.family, 'use another plugin')}"
    kind = _KIND.get(entry.family, entry.family)
    return PluginError(f"{kind} {label!r}{plugin} from {entry.source} ({entry.module}): {what}; {fix}")


def passes_through(exc: BaseException) -> bool:
    """Exceptions a guard never rewrites: messages already meant for the user, and running out of memory
    (which ``profile`` records as a result)."""
    if isinstance(exc, (ThinkfastError, MemoryError)):
        return True
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "can't allocate memory" in str(exc))


@contextmanager
def calling(entry: PluginEntry, what: str, label: str = "") -> Iterator[None]:
    """Run the body (a call into ``entry``'s plugin); an exception that went through the plugin's code becomes
    a :class:`PluginError` ``<what> raised <Type: message> (at file:line)``."""
    try:
        yield
    except Exception as exc:
        if passes_through(exc):
            raise
        where = exception_summary(exc, entry)
        if where is None and _raised_by_the_call(exc):  # a wrong signature, a missing method: no plugin line ran
            where = f"{type(exc).__name__}: {exc}"
        if where is None:
            raise
        raise plugin_error(entry, f"{what} raised {where}", label) from exc


def _raised_by_the_call(exc: BaseException) -> bool:
    """Whether the exception came from the guarded call itself (binding its arguments, looking the method up,
    calling ``iter``/``next``), not from code it ran: the guarded body, one call into the plugin, is the only
    frame of its traceback."""
    frames = [f for f in _frames(exc)
              if _resolved(f.filename) != _THIS_FILE and Path(f.filename).name != "contextlib.py"]
    return len(frames) <= 1


def checked_iter(entry: PluginEntry, items: Iterable[Any], what: str, label: str = "") -> Iterator[Any]:
    """``items`` (something the plugin returned to iterate over), each ``next`` run under :func:`calling`."""
    with calling(entry, what, label):
        iterator = iter(items)
    while True:
        with calling(entry, what, label):
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


def exception_summary(exc: BaseException, entry: PluginEntry) -> str | None:
    """``Type: message (at file:line)``, the line being the deepest one in the plugin's own code, or, when the
    exception was raised further in (in a library the plugin called), ``(raised at file:line, called from
    the plugin at file:line)``. None when no frame of the traceback is the plugin's."""
    frames = _frames(exc)
    homes = plugin_homes(entry)
    own = [f for f in frames if _inside(f.filename, homes)]
    if not own:
        return None
    text = f"{type(exc).__name__}: {exc}"
    if own[-1] is frames[-1]:
        return f"{text} (at {_where(own[-1])})"
    return f"{text} (raised at {_where(frames[-1])}, called from the plugin at {_where(own[-1])})"


def plugin_homes(entry: PluginEntry) -> list[Path]:
    """The files or folders of ``entry``'s code: the top-level package (or single module) of the module that
    defines its component and of the module its entry point names. thinkfast's own package never counts (a
    plugin may register a class that thinkfast defines)."""
    homes = []
    for module in (getattr(entry.component, "__module__", None), entry.module):
        home = _module_home((module or "").split(".")[0])
        if home is not None and home != _THINKFAST_HOME and home not in homes:
            homes.append(home)
    return homes


def _module_home(name: str) -> Path | None:
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if file is None:
        paths = list(getattr(module, "__path__", []) or [])  # a namespace package: its first folder
        return _resolved(paths[0]) if paths else None
    path = _resolved(file)
    return path.parent if path is not None and path.name == "__init__.py" else path


def _inside(filename: str, homes: list[Path]) -> bool:
    path = _resolved(filename)
    return path is not None and any(path == home or path.is_relative_to(home) for home in homes)


@functools.lru_cache(maxsize=4096)
def _resolved(filename: str) -> Path | None:
    """``filename`` resolved (None if it cannot be), once per file: evaluate may meet a plugin's failing
    ``extract_answer`` on every one of 100k samples, and each failure is matched against the plugins' files."""
    try:
        return Path(filename).resolve()
    except (OSError, ValueError):
        return None


def _frames(exc: BaseException) -> traceback.StackSummary:
    """The frames of ``exc``'s traceback, without reading their source lines (only files and line numbers
    are shown)."""
    return traceback.StackSummary.extract(traceback.walk_tb(exc.__traceback__), lookup_lines=False)


def _where(frame: traceback.FrameSummary) -> str:
    return f"{frame.filename}:{frame.lineno}"


def third_party_error(exc: BaseException) -> PluginError | None:
    """The CLI's last resort for an exception no guard caught: if the deepest frame of its traceback that
    belongs to any plugin's code belongs to a third-party plugin, the one-line error naming that plugin
    (None otherwise: thinkfast's own code, built-in plugins included, keeps its traceback). Uses the
    registry only if it is already loaded."""
    from thinkfast import registry as registry_module

    registry = registry_module._REGISTRY
    if registry is None or passes_through(exc):
        return None
    entries = registry.all_entries()
    homes = [(entry, plugin_homes(entry)) for entry in entries]
    for frame in reversed(_frames(exc)):
        owners = [entry for entry, home in homes if _inside(frame.filename, home)]
        if not owners:
            continue
        entry = owners[0]
        if entry.package == registry_module.BUILTIN_DISTRIBUTION:
            return None
        summary = exception_summary(exc, entry)
        return plugin_error(entry, f"raised {summary}") if summary else None
    return None


def describe(value: Any) -> str:
    """A returned value in a few words: ``None``, ``'2' (str)``, ``a list of 3 items``, ``an array of dtype
    <U1``."""
    import numpy as np

    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype}"
    if isinstance(value, (list, tuple, dict, set)):
        return f"a {type(value).__name__} of {len(value)} item{'' if len(value) == 1 else 's'}"
    text = repr(value)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({type(value).__name__})"
