"""fleetnas runtime: what runs on a device.

Bundle format, ONNX Runtime engine, telemetry, mode policy, hardware profiles and the DVFS
energy model. This package imports nothing else of fleetnas and needs neither torch nor flwr.
"""

__version__ = "0.1.0"
