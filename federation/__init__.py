"""Federated architecture search on Flower, under differential privacy.

Devices run a numpy-only local search on their own data and hardware profile; the server
aggregates architectures and scores without seeing the data (DESIGN.md, "The protocol"). The
numpy building blocks live here in small modules: ``dp`` (the Gaussian mechanisms: clipped,
noised score sums, the private set union of proposals, secure noise), ``accounting`` (one privacy
ledger over Flower's RDP accountant) and ``aggregate`` (aggregation weights, the global choice,
per-tier fronts and mode plans). The Flower ServerApp/ClientApp use them. This package may import
``runtime``, ``search`` (numpy parts) and flwr; torch only lazily, in the supernet-weights path.
"""
