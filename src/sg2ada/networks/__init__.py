"""StyleGAN2 networks (Karras et al. 2020) as Keras 3 models: `Generator` (mapping + synthesis) and
`Discriminator`, with NVIDIA's TF1 variable names (see docs/design.md, "networks").

Importing this package does not import TensorFlow: `sg2ada.networks.config` is used by the CLI's
option parsing, which must stay fast. The model classes load on first access.
"""

from __future__ import annotations

import importlib

from sg2ada.networks.config import DiscriminatorConfig, GeneratorConfig, MappingConfig

_LAZY = {
    "Generator": "sg2ada.networks.generator",
    "Discriminator": "sg2ada.networks.discriminator",
    "MappingNetwork": "sg2ada.networks.mapping",
    "SynthesisNetwork": "sg2ada.networks.synthesis",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GeneratorConfig", "DiscriminatorConfig", "MappingConfig", *_LAZY]
