"""Built-in aggregators: ``majority``, ``reward-model`` and ``verifier``."""

from thinkfast_plugins.aggregators.majority import Majority
from thinkfast_plugins.aggregators.reward_model import RewardModel
from thinkfast_plugins.aggregators.verifier import Verifier

from thinkfast.hookspecs import hookimpl


@hookimpl
def register_aggregators(register):
    """Register the three built-in aggregators."""
    register("majority", Majority)
    register("reward-model", RewardModel)
    register("verifier", Verifier)
