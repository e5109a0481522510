"""Built-in datasets plugins."""

from thinkfast.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    """Nothing registered yet."""
