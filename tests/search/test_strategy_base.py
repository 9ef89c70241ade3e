"""The problem/strategy interfaces: evaluation conventions, run budgets, checkpoint and resume."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.hardware import load_device
from search.cost.table import SpaceCostTable
from search.problem import Constraint, Objective, ProblemError, SpaceProblem
from search.space import load_space
from search.strategies.base import CheckpointError, load_checkpoint, run, save_checkpoint
from search.strategies.random_search import RandomSearch


@pytest.fixture(scope="module")
def problem():
    space = load_space("imagenet")
    table = SpaceCostTable(space, load_device("rpi4"))
    return SpaceProblem(
        space, [table.evaluate], [Objective("macs", "max"), Objective("latency_ms")], [Constraint("latency_ms", 30.0)]
    )


def test_evaluation_is_in_minimisation_form_with_normalised_violations(problem):
    X = problem.sample(50, np.random.default_rng(0))
    ev = problem.evaluate(X)
    assert np.array_equal(ev.F[:, 0], -ev.metrics["macs"])
    assert np.array_equal(ev.F[:, 1], ev.metrics["latency_ms"])
    np.testing.assert_allclose(ev.G[:, 0], (ev.metrics["latency_ms"] - 30.0) / 30.0)
    assert np.array_equal(ev.feasible, ev.metrics["latency_ms"] <= 30.0)
    assert np.all(ev.total_violation[ev.feasible] == 0)


def test_lower_bound_constraint_and_bad_direction():
    c = Constraint("accuracy", 0.8, upper=False)
    np.testing.assert_allclose(c.violation(np.array([0.9, 0.8, 0.4])), [-0.125, 0.0, 0.5])
    with pytest.raises(ProblemError, match="allowed: min, max"):
        Objective("x", "up")


def test_unknown_metric_lists_known_ones(problem):
    bad = SpaceProblem(problem.space, problem.evaluators, [Objective("accuracy", "max")])
    with pytest.raises(ProblemError, match=r"unknown metric\(s\) \['accuracy'\].*latency_ms"):
        bad.evaluate(bad.sample(2, np.random.default_rng(0)))


def test_budget_is_exact(problem):
    result = run(RandomSearch(problem, seed=0, batch=64), max_evals=200)
    assert len(result.X) == 200 and result.stopped_by == "budget"
    assert [g["n_evals"] for g in result.history.generations] == [64, 128, 192, 200]


def test_resume_reproduces_the_uninterrupted_run(problem, tmp_path):
    full = run(RandomSearch(problem, seed=3, batch=40), max_evals=400)
    ck = tmp_path / "ck.npz"
    run(RandomSearch(problem, seed=3, batch=40), max_evals=160, checkpoint=ck)
    resumed = run(RandomSearch(problem, seed=3, batch=40), max_evals=400, checkpoint=ck, resume=True)
    assert np.array_equal(full.X, resumed.X) and np.array_equal(full.F, resumed.F)
    assert len(resumed.history.generations) == 10


def test_checkpoint_refuses_other_parameters(problem, tmp_path):
    ck = tmp_path / "ck.npz"
    s = RandomSearch(problem, seed=1, batch=10)
    run(s, max_evals=20, checkpoint=ck)
    with pytest.raises(CheckpointError, match="field 'params'"):
        load_checkpoint(ck, RandomSearch(problem, seed=1, batch=11))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.npz", s)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "junk.npz", s)


def test_interrupt_leaves_a_checkpoint(problem, tmp_path):
    ck = tmp_path / "ck.npz"
    calls = []

    def progress(stats):
        calls.append(stats.generation)
        if stats.generation == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(RandomSearch(problem, seed=5, batch=10), max_evals=100, checkpoint=ck, progress=progress)
    history = load_checkpoint(ck, RandomSearch(problem, seed=5, batch=10))
    assert history.n_evals == 30
    save_checkpoint(tmp_path / "again.npz", RandomSearch(problem, seed=5, batch=10), history)
