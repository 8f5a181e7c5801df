"""The feature networks behind the GAN metrics, loaded from the files the papers used.

- Inception-v3, the 2015-12-05 ImageNet graph (`classify_image_graph_def.pb` inside
  `inception-2015-12-05.tgz`) that defines FID (Heusel et al. 2017, TTUR code), KID (Binkowski et
  al. 2018) and IS (Salimans et al. 2016, OpenAI code). The frozen GraphDef is imported with
  `tf.compat.v1.import_graph_def` inside `tf.compat.v1.wrap_function`, fed at `ExpandDims:0` (float
  pixels 0..255, any size) so that the graph's own `ResizeBilinear` to 299x299 and `(x-128)/128`
  scaling run exactly as in the reference, and read at `pool_3:0` (2048 features). Only the part of
  the graph between those tensors is imported (the batch-1 `pool_3/_reshape` and softmax are left
  out, which is what the TTUR code's batch-shape patch achieved in TF1), and the pre-2016
  `BatchNormWithGlobalNormalization` nodes are rewritten into the same arithmetic in current ops
  (current TensorFlow refuses that op inside a function graph). IS uses
  `softmax(pool_3 @ W)` with `W` the weight input of `softmax/logits/MatMul` and no bias, as the
  OpenAI code and NVIDIA's `no_output_bias=True` do.
- VGG16 (Simonyan & Zisserman 2015) as NVIDIA's TF1 StyleGAN2-ADA release ships it: `vgg16.pkl`
  (fc2 features for precision/recall, Kynkaanniemi et al. 2019) and `vgg16_zhang_perceptual.pkl`
  (the LPIPS distance of Zhang et al. 2018, for PPL, Karras et al. 2019). Both are dnnlib TF1 network
  pickles; their variables are read with a restricted unpickler (`tf1_pickle`) and the computation is
  rebuilt here in TF (NHWC): ImageNet mean/std normalisation of [0,255] input, 13 3x3 convs + ReLU with
  2x2 max pools, fc1/fc2 + ReLU on the NCHW-flattened pool5 for the 4096-d features (after a 224x224
  bilinear resize with TF1's legacy corner alignment), and for LPIPS the channel-normalised
  relu1_2/2_2/3_3/4_3/5_3 activations whose squared differences are weighted by the learned 1x1
  `lin` weights, averaged spatially and summed over layers. Variables are matched to layers by their
  order and shapes (the VGG16 sequence is unambiguous), not by guessed names.

Files are found in this order: an explicit path (`--feature-net`), the environment variable
(`SG2ADA_INCEPTION`, `SG2ADA_VGG16`, `SG2ADA_LPIPS`), the cache directory (`$SG2ADA_CACHE` or
`~/.cache/sg2ada`, sub-folder `feature-nets`), and finally a download from the standard URL (verified
against a pinned SHA-256 where one is published, and always by loading it) unless
`SG2ADA_OFFLINE=1`. When none works the UserError names the file needed and where to put it. The
cache location, offline switch and atomic verified download are `sg2ada.cache`, shared with the
transfer-learning sources.
"""

from __future__ import annotations

import dataclasses
import os
import tarfile
import urllib.error

import numpy as np

from sg2ada.cache import (
    DownloadRejected,
    cache_dir,
    check_cached_digest,
    download_verified,
    offline,
)
from sg2ada.errors import UserError

__all__ = [
    "FEATURE_NETS",
    "FeatureNetSpec",
    "InceptionV3",
    "VGG16",
    "cache_dir",
    "get_feature_net",
    "resolve_feature_net_path",
]


@dataclasses.dataclass(frozen=True)
class FeatureNetSpec:
    kind: str  # 'inception' | 'vgg16' | 'lpips'
    filename: str  # the file name in the cache and at the URL
    url: str
    env: str  # environment variable holding a local path
    sha256: str | None  # pinned digest of the download when published; None = verify by loading
    purpose: str


# NVIDIA's TF1 release downloads these; the Inception tgz is Google's original (NVIDIA's own
# `inception_v3_features.pkl` is stated to be identical to it).
FEATURE_NETS = {
    "inception": FeatureNetSpec(
        "inception",
        "inception-2015-12-05.tgz",
        "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz",
        "SG2ADA_INCEPTION",
        None,
        "FID/KID/IS",
    ),
    "vgg16": FeatureNetSpec(
        "vgg16",
        "vgg16.pkl",
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada/pretrained/metrics/vgg16.pkl",
        "SG2ADA_VGG16",
        None,
        "precision/recall",
    ),
    "lpips": FeatureNetSpec(
        "lpips",
        "vgg16_zhang_perceptual.pkl",
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada/pretrained/metrics/vgg16_zhang_perceptual.pkl",
        "SG2ADA_LPIPS",
        None,
        "PPL (LPIPS)",
    ),
}

INCEPTION_GRAPH_MEMBER = "classify_image_graph_def.pb"
_INCEPTION_INPUT = "ExpandDims:0"
_INCEPTION_POOL = "pool_3:0"
_INCEPTION_LOGITS_MATMUL = "softmax/logits/MatMul"


def _missing_message(spec: FeatureNetSpec, detail: str = "") -> str:
    where = os.path.join(cache_dir("feature-nets"), spec.filename)
    extra = f" ({detail})" if detail else ""
    return (
        f"the {spec.purpose} feature network {spec.filename} is not available{extra}: download {spec.url} "
        f"and put it at {where}, or pass --feature-net PATH, or set {spec.env}=PATH"
    )


def _match_kind(path: str) -> str | None:
    """Which feature network a user-given file is, from its name."""
    base = os.path.basename(path).lower()
    if base.endswith((".tgz", ".tar.gz", ".pb")) or "inception" in base:
        return "inception"
    if "zhang" in base or "lpips" in base or "perceptual" in base:
        return "lpips"
    if base.endswith(".pkl") and "vgg" in base:
        return "vgg16"
    return None


def _from_user_paths(spec: FeatureNetSpec, paths) -> str | None:
    for p in paths or ():
        if os.path.isdir(p):
            cand = os.path.join(p, spec.filename)
            if os.path.isfile(cand):
                return cand
            if spec.kind == "inception" and os.path.isfile(os.path.join(p, INCEPTION_GRAPH_MEMBER)):
                return os.path.join(p, INCEPTION_GRAPH_MEMBER)
        elif _match_kind(p) == spec.kind:
            if not os.path.isfile(p):
                raise UserError(f"--feature-net {p}: no such file (expected {spec.filename} for {spec.purpose})")
            return p
    return None


def _download(spec: FeatureNetSpec, dst: str, timeout: float = 60) -> None:
    # Verified by loading it, so a truncated or wrong file never enters the cache.
    try:
        download_verified(spec.url, dst, lambda tmp: _load(spec.kind, tmp), sha256=spec.sha256,
                          what=spec.filename, timeout=timeout)
    except DownloadRejected as e:
        raise UserError(_missing_message(spec, e.detail)) from None


def resolve_feature_net_path(kind: str, paths=None, download: bool | None = None) -> str:
    """The local file of feature network `kind`, downloading it into the cache if allowed."""
    spec = FEATURE_NETS[kind]
    if isinstance(paths, str):
        paths = [paths]
    found = _from_user_paths(spec, paths)
    if found:
        return found
    env = os.environ.get(spec.env)
    if env:
        found = _from_user_paths(spec, [env]) or (env if os.path.isfile(env) else None)
        if not found:
            raise UserError(f"{spec.env}={env}: no such file (expected {spec.filename} for {spec.purpose})")
        return found
    cached = os.path.join(cache_dir("feature-nets"), spec.filename)
    if os.path.isfile(cached):
        check_cached_digest(cached)
        return cached
    if download is None:
        download = not offline()
    if not download:
        raise UserError(_missing_message(spec, "offline"))
    try:
        _download(spec, cached)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        raise UserError(_missing_message(spec, f"download failed: {reason}")) from None
    return cached


# ---------------------------------------------------------------------------------------------------
# Quantisation, as NVIDIA feeds generated images to every feature network.


def _to_rgb_float(images_uint8):
    import tensorflow as tf

    x = tf.cast(images_uint8, tf.float32)
    if x.shape[-1] == 1:
        x = tf.tile(x, [1, 1, 1, 3])
    return x


# ---------------------------------------------------------------------------------------------------
# Inception-v3 (2015-12-05 frozen graph).


def _read_inception_graph_bytes(path: str) -> bytes:
    if path.endswith((".tgz", ".tar.gz", ".tar")) or tarfile.is_tarfile(path):
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar.getmembers():
                    if os.path.basename(member.name) == INCEPTION_GRAPH_MEMBER and member.isfile():
                        return tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UserError(f"{path} is not a readable inception-2015-12-05.tgz ({e})") from None
        raise UserError(f"{path} holds no {INCEPTION_GRAPH_MEMBER}: use Google's inception-2015-12-05.tgz")
    with open(path, "rb") as f:
        return f.read()


def _sub_graph(graph_def, outputs, inputs=()):
    """The nodes `outputs` depend on, in their original order, cut at `inputs`: those become float
    placeholders of the same name, so the JPEG decoding in front of the 2015 graph is left out."""
    import tensorflow as tf

    by_name = {n.name: n for n in graph_def.node}
    keep, todo = set(), list(outputs)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        if name not in inputs:
            todo.extend(inp.lstrip("^").split(":")[0] for inp in by_name[name].input)
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for n in graph_def.node:
        if n.name in inputs:
            ph = out.node.add()
            ph.name, ph.op = n.name, "Placeholder"
            ph.attr["dtype"].type = tf.float32.as_datatype_enum
        elif n.name in keep:
            out.node.add().CopyFrom(n)
    return out


def _modernize(graph_def, path: str):
    """Rewrite ops that current TensorFlow refuses to run inside a function graph.

    The 2015 graph predates GraphDef version 9 and uses `BatchNormWithGlobalNormalization`. TF1 ran
    it because importing into an empty tf.Graph adopts the file's old producer version; a
    `wrap_function` graph has today's version, where that kernel refuses to run. Each such node
    becomes the same arithmetic in current ops, in the kernel's order
    (`(t - mean) * (rsqrt(var + eps) * gamma) + beta`), keeping the node's name so its consumers
    are unchanged.
    """
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry

    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.op != "BatchNormWithGlobalNormalization":
            out.node.add().CopyFrom(node)
            continue
        t_attr = node.attr["T"]
        t, mean, var, beta, gamma = node.input[:5]
        ctrl = [i for i in node.input[5:] if i.startswith("^")]
        name = node.name

        def add(op, suffix, inputs, _name=name):
            n = out.node.add()
            n.name = f"{_name}/_sg2ada_{suffix}" if suffix else _name
            n.op = op
            n.input.extend(inputs)
            n.attr["T"].CopyFrom(t_attr)
            if node.device:
                n.device = node.device
            return n.name

        eps = out.node.add()
        eps.name = f"{name}/_sg2ada_eps"
        eps.op = "Const"
        eps.attr["dtype"].type = t_attr.type
        eps.attr["value"].tensor.CopyFrom(
            tf.make_tensor_proto(node.attr["variance_epsilon"].f, dtype=tf.dtypes.as_dtype(t_attr.type))
        )
        scale = add("Rsqrt", "rsqrt", [add("AddV2", "add", [var, eps.name])])
        if node.attr["scale_after_normalization"].b:
            scale = add("Mul", "scale", [scale, gamma])
        centred = add("Sub", "sub", [t, mean] + ctrl)
        add("AddV2", "", [add("Mul", "mul", [centred, scale]), beta])
    current = tf.version.GRAPH_DEF_VERSION
    for node in out.node:
        op_def = op_def_registry.get(node.op)
        if op_def is None:
            raise UserError(f"{path}: uses the op {node.op!r} unknown to TensorFlow; it is not the Inception graph")
        if op_def.HasField("deprecation") and op_def.deprecation.version <= current:
            version = op_def.deprecation.version
            raise UserError(f"{path}: uses {node.op!r}, removed from TensorFlow at GraphDef version {version}")
    return out


class InceptionV3:
    """The 2015-12-05 Inception graph as a TF2 callable.

    `features(images_uint8_nhwc)` -> [N, 2048] pool_3; `probabilities(...)` -> [N, 1008] softmax of
    the bias-free logits (IS); `features_and_probabilities(...)` both. Any image size; grayscale is
    repeated to RGB. Batches of any size (the graph is re-imported with a free batch dimension, which
    is what the classic `_shape` patch of the TTUR code achieves in TF1).
    """

    name = "inception-2015-12-05"

    def __init__(self, path: str):
        import tensorflow as tf

        self.path = path
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(_read_inception_graph_bytes(path))
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
            raise UserError(f"{path} is not a TensorFlow GraphDef ({type(e).__name__})") from None
        nodes = {n.name: n for n in graph_def.node}
        for needed in ("ExpandDims", "pool_3", _INCEPTION_LOGITS_MATMUL):
            if needed not in nodes:
                raise UserError(
                    f"{path} has no node {needed!r}: it is not the inception-2015-12-05 graph FID is defined with"
                )
        w_input = nodes[_INCEPTION_LOGITS_MATMUL].input[1]
        w_name = w_input if ":" in w_input else w_input + ":0"
        # Keep only what pool_3 and the softmax weights need. The rest hard-wires batch 1
        # (`pool_3/_reshape` to [1, 2048], the softmax after it): imported into a function whose
        # batch size is known it would fail shape inference, which is what the TF1-era `_shape`
        # patch of the TTUR code worked around.
        graph_def = _modernize(_sub_graph(graph_def, ["pool_3", w_name.split(":")[0]], inputs=("ExpandDims",)), path)

        def _import(x):
            pool, w = tf.compat.v1.import_graph_def(
                graph_def, input_map={_INCEPTION_INPUT: x}, return_elements=[_INCEPTION_POOL, w_name], name="inception"
            )
            feats = tf.reshape(pool, [-1, pool.shape[-1]])
            logits = tf.matmul(feats, w)  # no output bias: as the OpenAI IS code and NVIDIA do
            return feats, tf.nn.softmax(logits)

        spec = tf.TensorSpec([None, None, None, 3], tf.float32)
        try:
            self._fn = tf.compat.v1.wrap_function(_import, [spec])
        except (ValueError, TypeError, tf.errors.OpError) as e:
            raise UserError(f"{path}: cannot import the Inception graph into TensorFlow ({e})") from None
        self.num_features = int(self._fn.structured_outputs[0].shape[-1])
        self.num_classes = int(self._fn.structured_outputs[1].shape[-1])

    def features_and_probabilities(self, images_uint8):
        return self._fn(_to_rgb_float(images_uint8))

    def features(self, images_uint8):
        return self.features_and_probabilities(images_uint8)[0]

    def probabilities(self, images_uint8):
        return self.features_and_probabilities(images_uint8)[1]


# ---------------------------------------------------------------------------------------------------
# VGG16 (+ LPIPS) from NVIDIA's TF1 pickles.

_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
_VGG16_BLOCKS = (2, 2, 3, 3, 3)  # convs per block; a 2x2 max pool follows each block
_LPIPS_EPS = 1e-10


def _vgg_weights_from_tf1(path: str, want_fc: bool, want_lpips: bool):
    """Pick VGG16's tensors out of a dnnlib pickle by order and shape."""
    from sg2ada.legacy.tf1_pickle import read_tf1_network

    obj = read_tf1_network(path, kind="NVIDIA VGG16 metric pickle")
    var_list = list(obj.collect_variables(path).items())
    convs3, lin, fcs, vecs = [], [], [], []
    for name, v in var_list:
        v = np.asarray(v, np.float32)
        if v.ndim == 4 and v.shape[0] == 3 and v.shape[1] == 3:
            convs3.append((name, v))
        elif (v.ndim == 4 and v.shape[:2] == (1, 1) and v.shape[3] == 1) or (v.ndim == 2 and v.shape[1] == 1):
            lin.append((name, v))  # LPIPS 1x1 `lin` weights: one output channel, no bias
        elif v.ndim == 2:
            fcs.append((name, v))
        elif v.ndim == 1:
            vecs.append((name, v))

    def bias_for(weight_name, out_ch, used):
        # Prefer the bias that shares the weight's scope; fall back to the next unused one of the right size.
        scope = weight_name.rsplit("/", 1)[0]
        for i, (n, b) in enumerate(vecs):
            if i not in used and n.rsplit("/", 1)[0] == scope and b.shape == (out_ch,):
                used.add(i)
                return b
        for i, (n, b) in enumerate(vecs):
            if i not in used and b.shape == (out_ch,):
                used.add(i)
                return b
        raise UserError(f"{path}: no bias of size {out_ch} for {weight_name}; not NVIDIA's VGG16 pickle")

    if len(convs3) != 13:
        raise UserError(f"{path}: found {len(convs3)} 3x3 conv weights, VGG16 has 13; not NVIDIA's VGG16 pickle")
    used: set = set()
    conv = [(w, bias_for(n, w.shape[3], used)) for n, w in convs3]
    prev = 3
    for w, _ in conv:
        if w.shape[2] != prev:
            raise UserError(f"{path}: conv weight shapes do not chain ({w.shape}); not NVIDIA's VGG16 pickle")
        prev = w.shape[3]
    out = {"conv": conv}
    if want_fc:
        if len(fcs) < 2:
            raise UserError(f"{path} holds no fully connected layers: use vgg16.pkl for precision/recall")
        out["fc"] = [(w, bias_for(n, w.shape[1], used)) for n, w in fcs[:2]]
        if out["fc"][0][0].shape[0] != prev * 7 * 7 or out["fc"][1][0].shape[0] != out["fc"][0][0].shape[1]:
            shapes = [w.shape for w, _ in out["fc"]]
            raise UserError(f"{path}: fc shapes {shapes} do not follow VGG16's 7x7x{prev} pool5")
    if want_lpips:
        if len(lin) != 5:
            raise UserError(f"{path} holds no LPIPS weights: use vgg16_zhang_perceptual.pkl for PPL")
        out["lin"] = [w.reshape(-1) for _, w in lin]
        taps = np.cumsum(_VGG16_BLOCKS) - 1  # the last conv of each block feeds LPIPS
        want = [conv[i][0].shape[3] for i in taps]
        if [v.size for v in out["lin"]] != want:
            got = [v.size for v in out["lin"]]
            raise UserError(f"{path}: LPIPS weights for {got} channels, VGG16 taps have {want}")
    return out


class VGG16:
    """VGG16 from NVIDIA's TF1 metric pickles: `features()` (fc2, 4096-d, for PR) and `lpips()`."""

    def __init__(self, path: str, *, fc: bool = False, lpips: bool = False, resize: int = 224):
        import tensorflow as tf

        self.path = path
        self.name = os.path.splitext(os.path.basename(path))[0]
        w = _vgg_weights_from_tf1(path, want_fc=fc, want_lpips=lpips)
        self._conv = [(tf.constant(k), tf.constant(b)) for k, b in w["conv"]]
        self._fc = [(tf.constant(k), tf.constant(b)) for k, b in w.get("fc", [])]
        self._lin = [tf.constant(v) for v in w.get("lin", [])]
        self.resize = resize
        self.num_features = int(self._fc[-1][0].shape[1]) if self._fc else None
        self._features_fn = tf.function(self._features, reduce_retracing=True)
        self._lpips_fn = tf.function(self._lpips, reduce_retracing=True)

    def _trunk(self, x, pool5=True):
        """x: NHWC float in [0,255]. Returns the 5 block outputs (before pooling) and pool5."""
        import tensorflow as tf

        x = (x / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD
        taps = []
        i = 0
        for block, n in enumerate(_VGG16_BLOCKS):
            for _ in range(n):
                k, b = self._conv[i]
                x = tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME") + b)
                i += 1
            taps.append(x)
            if pool5 or block < len(_VGG16_BLOCKS) - 1:  # LPIPS never needs pool5: small images stay legal
                x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        return taps, x

    def _features(self, images_uint8):
        import tensorflow as tf

        x = _to_rgb_float(images_uint8)
        if self.resize:
            # TF1's resize_bilinear without corner alignment or half-pixel centres, as NVIDIA's
            # TF1 feature net (and its PyTorch port) resize to 224x224.
            x = tf.raw_ops.ResizeBilinear(
                images=x, size=[self.resize, self.resize], align_corners=False, half_pixel_centers=False
            )
        _, x = self._trunk(x)
        x = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [tf.shape(x)[0], -1])  # NCHW flatten order
        for k, b in self._fc:
            x = tf.nn.relu(tf.matmul(x, k) + b)
        return x

    def _lpips(self, img0, img1):
        import tensorflow as tf

        n = tf.shape(img0)[0]
        taps, _ = self._trunk(tf.concat([img0, img1], 0), pool5=False)
        dist = 0.0
        for f, lin in zip(taps, self._lin):
            f = f / (tf.sqrt(tf.reduce_sum(tf.square(f), axis=-1, keepdims=True)) + _LPIPS_EPS)
            d = tf.square(f[:n] - f[n:])
            dist += tf.reduce_mean(tf.reduce_sum(d * lin, axis=-1), axis=[1, 2])
        return dist

    def features(self, images_uint8):
        if not self._fc:
            raise ValueError(f"{self.path} was loaded without its fully connected layers")
        return self._features_fn(images_uint8)

    def lpips(self, img0, img1):
        """LPIPS distance [N] between NHWC float images in [0,255] (3 channels), no resizing."""
        if not self._lin:
            raise ValueError(f"{self.path} was loaded without LPIPS weights")
        return self._lpips_fn(img0, img1)


# ---------------------------------------------------------------------------------------------------

_LOADED: dict = {}


def _load(kind: str, path: str):
    if kind == "inception":
        return InceptionV3(path)
    if kind == "vgg16":
        return VGG16(path, fc=True)
    if kind == "lpips":
        return VGG16(path, lpips=True, resize=0)
    raise ValueError(f"unknown feature network kind {kind!r}")


def get_feature_net(kind: str, paths=None, download: bool | None = None):
    """The loaded feature network `kind` ('inception' | 'vgg16' | 'lpips'), cached per process."""
    path = os.path.abspath(resolve_feature_net_path(kind, paths, download))
    key = (kind, path)
    if key not in _LOADED:
        _LOADED[key] = _load(kind, path)
    return _LOADED[key]
