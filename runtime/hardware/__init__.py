"""Hardware profiles and the roofline workload model (numpy + pyyaml only).

``load_device("rpi4")`` reads a profile from the catalogue (``catalogue/*.yaml``, each with its
sources), ``workload_of(netspec, device)`` turns a network into per-layer roofline terms, and
``runtime.energy`` prices them under DVFS.
"""

from runtime.hardware.profile import (
    CACHE_LEVELS,
    DEFAULT_UTILISATION,
    DTYPES,
    KINDS,
    LAYER_CLASSES,
    DeviceProfile,
    DeviceProfileError,
    FrozenMap,
    OperatingPoint,
    PowerMode,
    canonical_dtype,
    list_devices,
    load_device,
)
from runtime.hardware.workload import Workload, layer_class, roofline_latency_ms, workload_of

__all__ = [
    "CACHE_LEVELS",
    "DEFAULT_UTILISATION",
    "DTYPES",
    "KINDS",
    "LAYER_CLASSES",
    "DeviceProfile",
    "DeviceProfileError",
    "FrozenMap",
    "OperatingPoint",
    "PowerMode",
    "Workload",
    "canonical_dtype",
    "layer_class",
    "list_devices",
    "load_device",
    "roofline_latency_ms",
    "workload_of",
]
