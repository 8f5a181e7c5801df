"""Datasets: the dataset tool (sources -> sharded TFRecords + dataset.json), the tf.data input
pipeline and the built-in demo data.

Public API (TensorFlow is imported only when a pipeline is built or a dataset is written):
    open_dataset(path) -> DatasetInfo
    training_iterator(strategy, path, *, batch_size, batch_gpu, mirror, subset, seed, skip_images, val)
    training_dataset_fn(path, *, batch_size, batch_gpu, ...)   its dataset_fn(input_context)
    make_dataset(path, batch_size, *, mirror, subset, seed, shuffle, cache, repeat, ...)   metrics, grids
    label_sampler(path, *, subset, seed, val) -> LabelSampler
    select_subset / select_val(count, subset, seed, val) -> the indices training uses / holds out
    raw_labels(path) -> every image's label (int64 [N] or float32 [N, D]) or None
    convert_dataset(source, dest, **options) -> dataset.json content
    generate_shapes(count, resolution, seed) -> (images, labels)
"""

from __future__ import annotations

_EXPORTS = {
    "DatasetInfo": "sg2ada.data.pipeline",
    "open_dataset": "sg2ada.data.pipeline",
    "make_dataset": "sg2ada.data.pipeline",
    "training_iterator": "sg2ada.data.pipeline",
    "training_dataset_fn": "sg2ada.data.pipeline",
    "label_sampler": "sg2ada.data.pipeline",
    "LabelSampler": "sg2ada.data.pipeline",
    "select_subset": "sg2ada.data.pipeline",
    "select_val": "sg2ada.data.pipeline",
    "raw_labels": "sg2ada.data.pipeline",
    "convert_dataset": "sg2ada.data.tool",
    "is_dataset_dir": "sg2ada.data.tool",
    "generate_shapes": "sg2ada.data.builtin",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # Lazy, so `import sg2ada.data` stays cheap for the CLI's option parsing.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sg2ada.data' has no attribute {name!r}")
