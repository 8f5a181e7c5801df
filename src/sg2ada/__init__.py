"""sg2ada: StyleGAN2-ADA (Karras et al., NeurIPS 2020) training in TensorFlow 2 / Keras 3.

Importing the package is cheap: TensorFlow is only imported by the submodules that need it.
"""

from sg2ada.version import __version__


def load_network(path, **kwargs):
    """Load trained networks (our snapshot, or an NVIDIA TF1/PyTorch pickle). See sg2ada.legacy.load."""
    from sg2ada.legacy.load import load_network as _load  # keeps TensorFlow out of `import sg2ada`

    return _load(path, **kwargs)


def train(**options):
    """Train from Python with `sg2ada train`'s option names; returns the run directory.
    See sg2ada.cli.train.train."""
    from sg2ada.cli.train import train as _train  # lazy: `import sg2ada` stays free of TensorFlow

    return _train(**options)


__all__ = ["load_network", "train", "__version__"]
