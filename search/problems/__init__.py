"""Ready-made problems: continuous benchmarks (ZDT1, ZDT2, DTLZ2) to compare strategies with pymoo."""

from search.problems.benchmarks import (
    BENCHMARKS,
    DTLZ2,
    ZDT1,
    ZDT2,
    RealProblem,
    benchmark,
    polynomial_mutation,
    sbx_crossover,
    simplex_lattice,
)

__all__ = [
    "BENCHMARKS",
    "DTLZ2",
    "ZDT1",
    "ZDT2",
    "RealProblem",
    "benchmark",
    "polynomial_mutation",
    "sbx_crossover",
    "simplex_lattice",
]
