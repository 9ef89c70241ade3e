"""Claim: the vectorised cost model costs ≥ 100,000 MobileNetV3-space architectures per second
on one core (MACs, params, bytes, peak memory, critical path, roofline latency and DVFS energy).

Peer, measured in the same run: the scalar path (compile each arch to a NetSpec and cost it
layer by layer with ``search.cost.report``), which is what a straightforward implementation does.
Prints one JSON document.

    python -m benchmarks.cost_throughput [--archs 200000] [--device rpi4] [--repeats 5]
"""

from __future__ import annotations

from benchmarks import pin_one_core

if __name__ == "__main__":
    pin_one_core()

import argparse
import json
import platform
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", type=int, default=200_000, help="architectures per timed batch [200000]")
    parser.add_argument("--scalar-archs", type=int, default=200, help="architectures for the scalar peer [200]")
    parser.add_argument("--device", default="rpi4", help="device profile [rpi4]")
    parser.add_argument("--space", default="imagenet", help="space preset or YAML [imagenet]")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported [5]")
    args = parser.parse_args(argv)

    from runtime.hardware import load_device
    from search.cost.report import cost_netspec
    from search.cost.table import SpaceCostTable
    from search.space import load_space

    space = load_space(args.space)
    device = load_device(args.device)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    table = SpaceCostTable(space, device)
    table_s = time.perf_counter() - t0
    codes = space.sample(args.archs, rng)
    table.evaluate(codes[:1000])  # warm caches
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        costs = table.evaluate(codes)
        times.append(time.perf_counter() - t)
    vec_s = float(np.median(times))

    few = codes[: args.scalar_archs]
    t = time.perf_counter()
    scalar_latency = []
    for arch in space.decode_batch(few):
        rep = cost_netspec(space.to_netspec(arch, alignment=device.alignment("float32")), device)
        scalar_latency.append(rep.latency_ms)
    scalar_s = time.perf_counter() - t
    agree = float(np.max(np.abs(np.array(scalar_latency) - costs["latency_ms"][: len(few)]) / np.array(scalar_latency)))

    result = {
        "claim": "vectorised cost model >= 100000 archs/s on one core",
        "space": space.name,
        "device": device.name,
        "archs": args.archs,
        "archs_per_second": args.archs / vec_s,
        "target_archs_per_second": 100_000,
        "meets_target": args.archs / vec_s >= 100_000,
        "table_build_seconds": table_s,
        "peer": "scalar NetSpec costing (search.cost.report), same metrics",
        "peer_archs_per_second": len(few) / scalar_s,
        "speedup_vs_peer": (args.archs / vec_s) / (len(few) / scalar_s),
        "max_relative_latency_difference_vs_peer": agree,
        "repeats_seconds": times,
        "cores_used": 1,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
