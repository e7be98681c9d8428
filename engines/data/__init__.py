"""Data sets by name: `load_dataset("mnist5k")`. Each source registers itself in its own module."""
from engines.data.base import DATASETS, DatasetSplits, DataSource, ImageSet, IMAGE_SIZE
from engines.data.loading import load_dataset, load_pool

__all__ = ["DATASETS", "DatasetSplits", "DataSource", "ImageSet", "IMAGE_SIZE", "load_dataset", "load_pool"]
