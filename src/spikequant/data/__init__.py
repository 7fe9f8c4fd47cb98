"""Datasets. Bundled real digits need no download; the others read a local folder.

``get_dataset(name, split, root=None)`` returns a ``torch.utils.data.Dataset`` of ``(x, y)`` with
``x`` a float tensor (images ``[C, H, W]`` in [0, 1]) and ``y`` an int64 label.
``load_arrays(name, split, limit=N)`` returns a split (or N samples of it) as two tensors;
``limit_dataset(dataset, N)`` takes N samples of a dataset (a file dataset's spread over it).
"""

from .registry import (
    DATASETS,
    dataset_info,
    get_dataset,
    limit_dataset,
    list_datasets,
    load_arrays,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "dataset_info",
    "get_dataset",
    "limit_dataset",
    "list_datasets",
    "load_arrays",
    "register_dataset",
]
