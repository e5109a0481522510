"""thinkfast's built-in plugins (imported as ``thinkfast_plugins``).

Each module here is named by an entry point in the ``thinkfast`` group of ``pyproject.toml``
and registers its components through the hooks in :mod:`thinkfast.hookspecs`, exactly as a
third-party package would. Core code never imports these modules.
"""
