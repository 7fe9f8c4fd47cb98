"""Datasets. Bundled real digits need no download; the others read a local folder.

``get_dataset(name, split, root=None)`` returns a ``torch.utils.data.Dataset`` of ``(x, y)`` with
``x`` a float tensor (images ``[C, H, W]`` in [0, 1]) and ``y`` an int64 label.
``load_arrays(name, split)`` returns the whole split as two tensors (fast for small sets).
"""

from .registry import (
    DATASETS,
    dataset_info,
    get_dataset,
    list_datasets,
    load_arrays,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "dataset_info",
    "get_dataset",
    "list_datasets",
    "load_arrays",
    "register_dataset",
]
