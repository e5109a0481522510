"""Built-in kernels plugins."""

from thinkfast.hookspecs import hookimpl


@hookimpl
def register_kernels(register):
    """Nothing registered yet."""
