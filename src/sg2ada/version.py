"""The sg2ada version, stamped into snapshots, dataset.json and metric results."""

__version__ = "0.1.0"
