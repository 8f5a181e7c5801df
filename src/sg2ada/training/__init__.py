"""StyleGAN2-ADA training (stylegan2-ada-pytorch `training/`): resolved options (options.py), losses
(loss.py), one distributed training iteration (trainer.py, distribute.py), the training loop,
checkpoints and monitoring (training_loop.py, checkpoint.py, monitor.py, run_dir.py).

Importing the package is cheap: `TrainingOptions`/`resolve_options` need no TensorFlow, and the
TensorFlow-backed names load on first access.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "TrainingOptions": "sg2ada.training.options",
    "resolve_options": "sg2ada.training.options",
    "frozen_d_layers": "sg2ada.training.options",
    "Trainer": "sg2ada.training.trainer",
    "StyleGAN2Loss": "sg2ada.training.loss",
    "make_strategy": "sg2ada.training.distribute",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
