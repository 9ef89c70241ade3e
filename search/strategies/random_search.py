"""Random search: the baseline every strategy must beat. Samples ``batch`` new candidates per
generation (de-duplicated against everything seen, as far as the space allows)."""

from __future__ import annotations

from typing import Any

import numpy as np

from search.problem import Evaluation, Problem
from search.strategies.base import Strategy


class RandomSearch(Strategy):
    """Uniform samples from the problem's representation, ``batch`` per generation."""

    name = "random"

    def __init__(self, problem: Problem, seed: int = 0, batch: int = 100) -> None:
        super().__init__(problem, seed)
        if batch < 1:
            raise ValueError(f"random search: field 'batch': must be >= 1, got {batch}")
        self.batch = batch

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed, "batch": self.batch}

    def ask(self) -> np.ndarray:
        return self.problem.canonical(self.problem.sample(self.batch, self.rng))

    def tell(self, X: np.ndarray, evaluation: Evaluation) -> None:
        self.generation += 1
