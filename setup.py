"""Package layout only (metadata is in pyproject.toml).

``plugins/`` is installed under the import name ``thinkfast_plugins`` so that no generic
top-level ``plugins`` module lands in site-packages.
"""

from setuptools import find_packages, setup

core = find_packages(include=["thinkfast", "thinkfast.*"])
builtin_plugins = ["thinkfast_plugins"] + [f"thinkfast_plugins.{p}" for p in find_packages("plugins")]
setup(
    packages=core + builtin_plugins,
    package_dir={"thinkfast_plugins": "plugins"},
    package_data={"thinkfast": ["py.typed"]},
)
