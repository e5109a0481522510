"""Built-in students plugins."""

from thinkfast.hookspecs import hookimpl


@hookimpl
def register_students(register):
    """Nothing registered yet."""
