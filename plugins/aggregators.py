"""Built-in aggregators plugins."""

from thinkfast.hookspecs import hookimpl


@hookimpl
def register_aggregators(register):
    """Nothing registered yet."""
