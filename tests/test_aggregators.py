"""Built-in aggregators: majority over answer classes, reward models and verifiers on tiny real HF models."""

from __future__ import annotations

import time

import numpy as np
import pytest

from thinkfast.evaluate.aggregation import Aggregator, select_by_scores
from thinkfast.evaluate.config import EvaluateSection
from thinkfast.evaluate.engine import evaluate_problems
from thinkfast.evaluate.graded import GradedProblem
from thinkfast.evaluate.metrics import accuracy_per_problem
from thinkfast.evaluate.runs import Run
from thinkfast.registry import get_registry

STEPS = "First, 3 + 4 = 7.\n\nThen 7 * 2 = 14.\n\nThe answer is \\boxed{14}."


def _graded(classes: list[int], class_correct: list[bool], texts: list[str] | None = None) -> GradedProblem:
    classes_arr = np.array(classes, dtype=np.int64)
    correct = np.append(np.array(class_correct), False)[classes_arr]
    texts = texts or [f"sample {i}" for i in range(len(classes))]
    return GradedProblem(problem_id="p", dataset="math500", reference="14", question="What is (3 + 4) * 2?",
                         texts=texts, answers=[str(c) if c >= 0 else None for c in classes], classes=classes_arr,
                         correct=correct, class_answers=[str(i) for i in range(len(class_correct))],
                         class_correct=np.array(class_correct), num_tokens=np.full(len(classes), 10))


def _aggregator(name: str, **options):
    return get_registry().get("aggregators", name)(options)


def test_majority_picks_the_largest_class_and_abstains_without_answers():
    majority = _aggregator("majority")
    problem = _graded([0, 1, 1, 1, -1, -1, -1, -1], [True, False])
    rng = np.random.default_rng(0)
    full = np.arange(8)[None, :]
    assert majority.aggregate(problem, full, None, rng).tolist() == [1]  # three wrong beat one right
    assert majority.aggregate(problem, np.array([[4, 5, 6]]), None, rng).tolist() == [-1]
    # accuracy@k averages over random subsets, not the first k samples
    acc = accuracy_per_problem([problem], majority, None, k=1, subsets=200, seed=0)
    assert acc[0] == pytest.approx(1 / 8, abs=0.06)


def test_majority_accuracy_is_reproducible_with_the_seed():
    majority = _aggregator("majority")
    problems = [_graded([0, 1, 0, 1, 2, 2], [True, False, False])]
    a = accuracy_per_problem(problems, majority, None, k=4, subsets=30, seed=3)
    b = accuracy_per_problem(problems, majority, None, k=4, subsets=30, seed=3)
    assert a.tolist() == b.tolist()


@pytest.fixture(scope="module")
def tiny_orm_dir(tiny_llama_dir, tmp_path_factory):
    """A tiny random LlamaForSequenceClassification (one label) with the SmolLM2 tokenizer."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(tiny_llama_dir)
    config.num_labels = 1
    out = tmp_path_factory.mktemp("tiny_orm")
    LlamaForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(out)
    return out


@pytest.mark.parametrize("fmt", ["rlhflow", "math-shepherd", "qwen-prm"])
def test_process_reward_model_end_to_end(tiny_llama_dir, fmt):
    """A tiny real causal LM as PRM: one score in (0, 1) per sample, stable under batching."""
    rm = _aggregator("reward-model", model=str(tiny_llama_dir), format=fmt, step_aggregation="min",
                     batch_size=2, device="cpu")
    texts = [STEPS, "Just guess.\n\n\\boxed{15}", STEPS.replace("14", "15"), ""]
    problem = _graded([0, 1, 1, -1], [True, False], texts)
    (scores,) = rm.score([problem])
    assert scores.shape == (4,) and np.all((scores >= 0) & (scores <= 1))
    assert np.all(scores[:3] > 0)
    rm_one = _aggregator("reward-model", model=str(tiny_llama_dir), format=fmt, step_aggregation="min",
                         batch_size=1, device="cpu")
    np.testing.assert_allclose(rm_one.score([problem])[0], scores, rtol=1e-4, atol=1e-6)
    chosen = rm.aggregate(problem, np.arange(4)[None, :], scores, np.random.default_rng(0))
    assert chosen[0] in (0, 1)


def test_prm_step_scores_are_read_at_one_position_per_step(tiny_llama_dir):
    from thinkfast_plugins.aggregators.reward_model import split_steps

    rm = _aggregator("reward-model", model=str(tiny_llama_dir), format="math-shepherd", device="cpu")
    rm.prepare()
    problem = _graded([0], [True], [STEPS])
    enc = rm._encode(problem, STEPS)
    assert len(enc.positions) == len(split_steps(STEPS, r"\n\s*\n")) == 3
    assert enc.positions == sorted(enc.positions) and enc.positions[-1] == len(enc.input_ids) - 1


def test_step_aggregations_differ_as_defined(tiny_llama_dir):
    from thinkfast_plugins.aggregators.reward_model import reduce_steps

    steps = np.array([0.9, 0.5, 0.8])
    assert reduce_steps(steps, "last") == 0.8
    assert reduce_steps(steps, "min") == 0.5
    assert reduce_steps(steps, "prod") == pytest.approx(0.36)
    assert reduce_steps(steps, "mean") == pytest.approx(2.2 / 3)
    assert reduce_steps(np.zeros(0), "min") == 0.0


def test_outcome_reward_model_and_best_of_n(tiny_orm_dir):
    rm = _aggregator("reward-model", model=str(tiny_orm_dir), format="orm", selection="best", device="cpu")
    problem = _graded([0, 1, 1], [True, False], [STEPS, "no", STEPS.replace("14", "15")])
    (scores,) = rm.score([problem])
    assert scores.shape == (3,) and np.all((scores > 0) & (scores < 1))
    chosen = rm.aggregate(problem, np.arange(3)[None, :], scores, np.random.default_rng(0))
    assert chosen[0] == problem.classes[int(np.argmax(scores))]


def test_weighted_best_of_n_sums_scores_per_class():
    rm_cls = get_registry().get("aggregators", "reward-model")
    rm = rm_cls({"model": "unused", "selection": "weighted"})
    problem = _graded([0, 1, 1], [True, False])
    scores = np.array([0.9, 0.5, 0.5])  # class 1 has more mass (1.0) than class 0 (0.9)
    assert rm.aggregate(problem, np.arange(3)[None, :], scores, np.random.default_rng(0)).tolist() == [1]
    best = rm_cls({"model": "unused", "selection": "best"})
    assert best.aggregate(problem, np.arange(3)[None, :], scores, np.random.default_rng(0)).tolist() == [0]


def test_verifier_model_gives_yes_probabilities(tiny_llama_dir):
    verifier = _aggregator("verifier", model=str(tiny_llama_dir), device="cpu", batch_size=4)
    problem = _graded([0, 1], [True, False], [STEPS, "It is 15."])
    (scores,) = verifier.score([problem])
    assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1))
    assert verifier.needs_question


def test_verifier_check_mode_uses_the_dataset_plugin():
    verifier = _aggregator("verifier", mode="check")
    problem = _graded([0, 1], [True, False], ["#### 14", "#### 15"])
    problem.dataset = "gsm8k"
    (scores,) = verifier.score([problem])
    assert scores.tolist() == [1.0, 0.0]
    assert not verifier.needs_question


def test_missing_model_is_a_recipe_error():
    from thinkfast.errors import RecipeError

    with pytest.raises(RecipeError, match=r"options\.model: the reward-model aggregator needs a model"):
        _aggregator("reward-model")
    with pytest.raises(RecipeError, match="mode 'model' needs a verifier model"):
        _aggregator("verifier")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")
def test_reward_model_scores_on_gpu_match_cpu(tiny_llama_dir):
    """On a CUDA machine: GPU float32 scoring agrees with the CPU, and bfloat16 stays close."""
    problem = _graded([0, 1, 1], [True, False], [STEPS, "Guess.\n\n\\boxed{15}", STEPS.replace("14", "15")])
    cpu = _aggregator("reward-model", model=str(tiny_llama_dir), format="rlhflow", device="cpu").score([problem])
    gpu = _aggregator("reward-model", model=str(tiny_llama_dir), format="rlhflow", device="cuda",
                      dtype="float32").score([problem])
    bf16 = _aggregator("reward-model", model=str(tiny_llama_dir), format="rlhflow", device="cuda",
                       dtype="bfloat16").score([problem])
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(bf16[0], cpu[0], atol=3e-2)


class _SlowToLoad(Aggregator):
    """Scores every sample 1 after loading a 'model' that takes 0.5 s, once, as the reward model loads its own."""

    LOAD_SECONDS = 0.5

    def __init__(self, options=None):
        super().__init__(options)
        self.loaded = False

    def prepare(self):
        if not self.loaded:
            time.sleep(self.LOAD_SECONDS)
            self.loaded = True

    def score(self, problems):
        self.prepare()  # as an aggregator used without evaluate's prepare call must
        return [np.ones(p.n) for p in problems]

    def aggregate(self, problem, subsets, scores, rng):
        return select_by_scores(problem, subsets, scores, "weighted", rng)


def test_loading_a_scoring_model_is_not_charged_to_the_first_models_time_budget(tmp_path):
    """The time budget charges an aggregator's scoring per sample; loading its model is a one-off cost, which
    had landed on whichever run was evaluated first (its accuracy-vs-seconds line moved right, the others' not)."""
    problems = [_graded([0, 1, 1, 0], [True, False]) for _ in range(2)]
    runs = [Run(label=name, path=tmp_path / name, problems=[], problem_seconds={"p": 4.0}) for name in ("a", "b")]
    aggregator = _SlowToLoad()
    section = EvaluateSection(bootstrap=0, subsets=10)
    costs = [evaluate_problems(run, "math500", problems, {"slow": aggregator}, section, seed=0)
             .aggregator_seconds_per_sample["slow"] for run in runs]
    assert aggregator.loaded
    assert max(costs) * sum(p.n for p in problems) < _SlowToLoad.LOAD_SECONDS / 5, costs


@pytest.mark.parametrize("name, options", [("reward-model", {"format": "orm"}), ("verifier", {})])
def test_built_in_scoring_aggregators_load_their_model_in_prepare(name, options, tiny_orm_dir, tiny_llama_dir):
    model = tiny_orm_dir if name == "reward-model" else tiny_llama_dir
    aggregator = _aggregator(name, model=str(model), device="cpu", **options)
    aggregator.prepare()
    assert aggregator._model is not None and aggregator._tokenizer is not None
