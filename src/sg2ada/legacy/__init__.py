"""Import of NVIDIA's released networks: TF1 pickles (NVlabs/stylegan2-ada, NVlabs/stylegan2) and
PyTorch pickles (NVlabs/stylegan2-ada-pytorch), read with restricted unpicklers that never run the
code such pickles embed.

- `restricted`: the allow-list unpickler and content sniffing shared by both formats.
- `tf1_pickle`: `dnnlib.tflib.network.Network` stand-in; `read_tf1_pickle(path) -> (G, D, Gs)`.
- `tf1_import`: TF1 `static_kwargs` -> our configs, variables by name -> our networks.
- `pytorch_pickle`: `torch_utils.persistence` stand-ins, a torch-free decoder of torch's tensor
  storages, PyTorch configs and weights (PyTorch is not needed).
- `pytorch_layout`: PyTorch state-dict names/layouts -> our variable names (networks package owner).
- `load`: `load_network(path)`, our snapshots and both pickle formats, routed by content.
"""

from sg2ada.legacy.restricted import sniff_format

__all__ = ["sniff_format"]
