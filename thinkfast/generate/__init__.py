"""``thinkfast generate``: many samples per problem, batched and timed.

- :mod:`thinkfast.generate.sampling`: on-device sampling keyed by (seed, problem, sample, token).
- :mod:`thinkfast.generate.scheduler`: which work item runs in which decode slot (continuous batching).
- :mod:`thinkfast.generate.stops`: stop strings and the answer rule on decoded text.
- :mod:`thinkfast.generate.engine`: prefill once per prompt, CUDA-graph decode of a fixed batch, refill.
- :mod:`thinkfast.generate.reference`: the slow full-forward loop the engine must reproduce (tests).
- :mod:`thinkfast.generate.output`: ``samples.jsonl`` / ``run.json`` writing and resume.
- :mod:`thinkfast.generate.distributed`: torchrun sharding and merging.
- :mod:`thinkfast.generate.runner`: the subcommand end to end.
"""
