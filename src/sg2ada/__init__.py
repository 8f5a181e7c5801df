"""sg2ada: StyleGAN2-ADA (Karras et al., NeurIPS 2020) training in TensorFlow 2 / Keras 3.

Importing the package is cheap: TensorFlow is only imported by the submodules that need it.
"""

__version__ = "0.1.0"


def load_network(path, **kwargs):
    """Load a network snapshot (ours, or an NVIDIA TF1/PyTorch pickle). See sg2ada.networks.snapshot."""
    from sg2ada.networks.snapshot import load_network as _load

    return _load(path, **kwargs)


def train(**options):
    """Train from Python with `sg2ada train`'s option names; returns the run directory.
    See sg2ada.cli.train.train."""
    from sg2ada.cli.train import train as _train  # lazy: `import sg2ada` stays free of TensorFlow

    return _train(**options)


__all__ = ["load_network", "train", "__version__"]
