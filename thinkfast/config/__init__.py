"""Recipes: TOML files parsed into typed, validated config objects."""

from thinkfast.config.fields import option
from thinkfast.config.loader import load_recipe, parse_overrides
from thinkfast.config.validate import from_dict, to_dict

__all__ = ["option", "load_recipe", "parse_overrides", "from_dict", "to_dict"]
