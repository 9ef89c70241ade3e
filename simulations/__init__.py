"""Runnable scenarios over simulated fleets.

``federated_search``: federated architecture search over a heterogeneous fleet on Flower's
Simulation Engine (Ray backend), under differential privacy, with a privacy–utility curve.
"""
