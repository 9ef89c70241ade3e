"""fleetnas search: hardware-aware neural architecture search.

The predictor-driven part (space, cost models, predictors, strategies, Pareto tools) is numpy
only, so a device can search locally; torch is imported only where weights are trained or
exported.
"""

__version__ = "0.1.0"
