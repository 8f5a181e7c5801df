"""GAN quality metrics as NVIDIA's StyleGAN2-ADA defines them (Karras et al. 2020): FID (Heusel et
al. 2017), KID (Binkowski et al. 2018), precision/recall (Kynkaanniemi et al. 2019), Inception Score
(Salimans et al. 2016) and perceptual path length (Karras et al. 2019), on the original feature
networks (the 2015-12-05 Inception graph, NVIDIA's TF1 VGG16 and LPIPS pickles); plus sg2ada's
memorisation check `copy1k_full` (memorization.py: how many fakes are near-copies of training images).

`compute_metric(name, G, dataset_path, ...)` computes one metric; `run_metrics(names, G, snapshot,
options)` is the training loop's entry point (jsonl + flat results, skipping metrics whose feature
network is unavailable); `report_metric` and `write_tensorboard` record results. TensorFlow is
imported only when something is computed.
"""

from sg2ada.metrics.metric_main import (
    METRICS,
    DatasetSource,
    compute_metric,
    is_valid_metric,
    list_valid_metrics,
    parse_metric_list,
    report_metric,
    run_metrics,
    try_compute_metric,
    write_tensorboard,
)

__all__ = [
    "METRICS",
    "DatasetSource",
    "compute_metric",
    "is_valid_metric",
    "list_valid_metrics",
    "parse_metric_list",
    "report_metric",
    "run_metrics",
    "try_compute_metric",
    "write_tensorboard",
]
