"""Claim: an MLP accuracy predictor fitted on supernet-measured architectures ranks held-out
architectures well (reports RMSE, Kendall τ and Spearman on held-out archs). Prints one JSON.

The supernet is a ``fleetnas supernet train`` output directory (trained here with the demo
configuration if none is given). Accuracies are measured with BN recalibration
(``SupernetEvaluator``); the predictor is numpy-only.

    python -m benchmarks.predictor_quality [--supernet DIR] [--archs 400] [--hidden 128,128,128]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", help="fleetnas supernet train output dir [train the demo config here]")
    parser.add_argument("--out", default="runs/predictor_quality", help="where to train the supernet if needed")
    parser.add_argument("--archs", type=int, default=400, help="distinct archs to measure (80 %% fit, 20 %% held out)")
    parser.add_argument("--hidden", default="128,128,128", help="MLP hidden sizes [128,128,128]")
    parser.add_argument("--recalibration-images", type=int, default=256, help="BN recalibration images [256]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from search.predictors.mlp import fit_predictor_from_supernet
    from search.supernet.artefacts import ensure_trained
    from search.supernet.evaluation import SupernetEvaluator
    from search.supernet.trained import TrainedSupernet

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    trained = (
        TrainedSupernet.load(args.supernet) if args.supernet else ensure_trained("demo", Path(args.out), progress=False)
    )
    root, space = trained.root, trained.space
    evaluator = SupernetEvaluator(
        trained.net, space, trained.train, trained.val, recalibration_images=args.recalibration_images
    )
    hidden = tuple(int(h) for h in args.hidden.split(","))
    _, report = fit_predictor_from_supernet(
        evaluator, space, n=min(args.archs, space.size()), seed=args.seed, hidden=hidden
    )
    result = {
        "claim": "MLP predictor on supernet-measured archs ranks held-out archs",
        "supernet": str(root),
        "space_size": int(space.size()),
        "hidden": list(hidden),
        **report,
        "total_seconds": time.perf_counter() - t0,
    }
    print(json.dumps(result, indent=2, default=float))
    return result


if __name__ == "__main__":
    main()
