"""Errors a user can act on.

Every exception derived from :class:`ThinkfastError` is caught by the CLI and printed as one
readable message (no traceback) followed by a non-zero exit (``exit_code``, 2 by default).
Raise them for bad input: recipe keys, plugin names, files, model paths, dataset lines, output
directories.
"""

from __future__ import annotations


class ThinkfastError(Exception):
    """Base class: a problem the user can fix. ``str(err)`` is the whole message."""

    exit_code = 2


class RecipeError(ThinkfastError):
    """One or more problems in a recipe; each item names file, key path, bad value and a fix."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PluginNotFoundError(ThinkfastError):
    """A plugin name that no installed package registered."""


class PluginConflictError(ThinkfastError):
    """Two packages registered the same name in one family."""


class ModelLoadError(ThinkfastError):
    """A model directory, hub id or GGUF file that cannot be loaded."""


class DataError(ThinkfastError):
    """A dataset file or record that cannot be read (names the file and line)."""


class OutputDirError(ThinkfastError):
    """An output directory that cannot be created or written to."""


class EngineUnavailableError(ThinkfastError):
    """A capability this install cannot provide (a CUDA kernel on a CPU machine, say)."""
