"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with Limited Data").

`AugmentPipe` (pipe.py) is the 18-transformation pipeline of Sec. 2-3 / App. B; `AdaController`
(controller.py) is the overfitting heuristic r_t of Sec. 3 that tunes the augmentation probability p;
preview.py renders the grid shown by `sg2ada augment-preview`.
"""

from sg2ada.augment.controller import (
    ADA_KIMG_DEFAULT,
    ADA_KIMG_RESUME,
    MODES,
    AdaController,
)
from sg2ada.augment.pipe import DEFAULT_PRESET, OPS, PRESETS, AugmentPipe

__all__ = [
    "ADA_KIMG_DEFAULT",
    "ADA_KIMG_RESUME",
    "DEFAULT_PRESET",
    "MODES",
    "OPS",
    "PRESETS",
    "AdaController",
    "AugmentPipe",
]
