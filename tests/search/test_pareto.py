import numpy as np

from search.pareto import front_2d


def _brute(cost, value):
    keep = []
    for i in range(len(cost)):
        dominated = any(
            (cost[j] <= cost[i] and value[j] >= value[i] and (cost[j] < cost[i] or value[j] > value[i]))
            or (cost[j] == cost[i] and value[j] == value[i] and j < i)
            for j in range(len(cost))
        )
        if not dominated:
            keep.append(i)
    return sorted(keep)


def test_front_2d_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        cost = rng.integers(0, 15, 60).astype(float)
        value = rng.integers(0, 15, 60).astype(float)
        front = front_2d(cost, value)
        assert sorted(front.tolist()) == _brute(cost, value)
        assert np.all(np.diff(cost[front]) > 0) and np.all(np.diff(value[front]) > 0)
