"""sg2ada: StyleGAN2-ADA (Karras et al., NeurIPS 2020) training in TensorFlow 2 / Keras 3.

Importing the package is cheap: TensorFlow is only imported by the submodules that need it.
"""

from sg2ada.version import __version__


def load_network(path, **kwargs):
    """Load trained networks (our snapshot, or an NVIDIA TF1/PyTorch pickle). See sg2ada.legacy.load."""
    from sg2ada.legacy.load import load_network as _load  # keeps TensorFlow out of `import sg2ada`

    return _load(path, **kwargs)


__all__ = ["load_network", "__version__"]
