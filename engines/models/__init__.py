"""Model zoo: `build_model(name, splits_meta)`. Each family registers itself in its own module.

Every model takes images in [0, 1] and normalises them itself (first layer), so the query API,
clones and generators all work in pixel space.
"""

from engines.models.base import MODELS, ModelInfo, Normalize, build_model, default_model_for, multiply_accumulates

__all__ = ["MODELS", "ModelInfo", "Normalize", "build_model", "default_model_for", "multiply_accumulates"]
