"""Straightforward float64 NumPy references for the sg2ada.ops tests.

Written from the definitions in NVIDIA's stylegan2-ada-pytorch (`upfirdn2d`: zero insertion, pad,
convolve with the flipped filter, downsample; `conv2d_resample`: pad once, then up-filter,
convolve, down-filter; `modulated_conv2d`: per-sample modulated, demodulated weights), in NCHW
with explicit loops over filter taps, so that they share no code with the TF implementation.
The helpers `to_nchw`/`to_nhwc` translate at the boundary.
"""

from __future__ import annotations

import numpy as np


def to_nchw(x):
    return np.transpose(np.asarray(x), [0, 3, 1, 2])


def to_nhwc(x):
    return np.transpose(np.asarray(x), [0, 2, 3, 1])


def parse_padding(padding):
    if isinstance(padding, int):
        padding = [padding, padding]
    if len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    return list(padding)


def filter_2d(f, gain=1.0):
    """NVIDIA's filter as a dense 2-D array with gain applied (separable 1-D -> outer product)."""
    f = np.asarray(f, np.float64)
    if f.ndim == 1:
        return np.outer(f, f) * gain
    return f * gain


def correlate_valid(z, k):
    """Per-channel 2-D correlation, 'valid' mode. z [N,C,H,W], k [kh,kw]."""
    kh, kw = k.shape
    oh, ow = z.shape[2] - kh + 1, z.shape[3] - kw + 1
    out = np.zeros(z.shape[:2] + (oh, ow))
    for a in range(kh):
        for b in range(kw):
            out += k[a, b] * z[:, :, a:a + oh, b:b + ow]
    return out


def pad_crop(z, px0, px1, py0, py1):
    z = np.pad(z, [(0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))])
    h, w = z.shape[2], z.shape[3]
    return z[:, :, max(-py0, 0): h - max(-py1, 0), max(-px0, 0): w - max(-px1, 0)]


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """x NCHW. Zero insertion, pad/crop, true convolution with f (flip unless flip_filter), keep every down-th."""
    upx, upy = (up, up) if isinstance(up, int) else up
    downx, downy = (down, down) if isinstance(down, int) else down
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    z = np.zeros([n, c, h * upy, w * upx])
    z[:, :, ::upy, ::upx] = x
    z = pad_crop(z, *parse_padding(padding))
    k = filter_2d(np.ones([1, 1]) if f is None else f, gain)
    if not flip_filter:
        k = k[::-1, ::-1]
    z = correlate_valid(z, k)
    return z[:, :, ::downy, ::downx]


def conv2d(z, w, groups=1, flip_weight=True):
    """Grouped 'valid' correlation. z [N,Cin,H,W], w TF layout [kh,kw,Cin/groups,Cout]."""
    w = np.asarray(w, np.float64)
    if not flip_weight:
        w = w[::-1, ::-1]
    kh, kw, cin_g, cout = w.shape
    cout_g = cout // groups
    oh, ow = z.shape[2] - kh + 1, z.shape[3] - kw + 1
    out = np.zeros([z.shape[0], cout, oh, ow])
    for g in range(groups):
        zg = z[:, g * cin_g:(g + 1) * cin_g]
        wg = w[:, :, :, g * cout_g:(g + 1) * cout_g]
        for a in range(kh):
            for b in range(kw):
                out[:, g * cout_g:(g + 1) * cout_g] += np.einsum(
                    "nchw,co->nohw", zg[:, :, a:a + oh, b:b + ow], wg[a, b])
    return out


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """NVIDIA's generic definition: all padding first, then up-filter, convolution, down-filter."""
    fw, fh = (1, 1) if f is None else (np.shape(f)[-1], np.shape(f)[0])
    px0, px1, py0, py1 = parse_padding(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    x = np.asarray(x, np.float64)
    z = upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up**2,
                  flip_filter=flip_filter)
    z = conv2d(z, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        z = upfirdn2d(z, f, down=down, flip_filter=flip_filter)
    return z


def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                     demodulate=True, flip_weight=True):
    """Per sample: w_ijk * s_i, demodulated per output channel, then conv2d_resample. x NCHW."""
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    styles = np.asarray(styles, np.float64)
    outs = []
    for i in range(x.shape[0]):
        w = weight * styles[i][None, None, :, None]
        if demodulate:
            w = w / np.sqrt(np.sum(w**2, axis=(0, 1, 2), keepdims=True) + 1e-8)
        outs.append(conv2d_resample(x[i:i + 1], w, resample_filter, up=up, down=down, padding=padding,
                                    flip_weight=flip_weight)[0])
    y = np.stack(outs)
    if noise is not None:
        y = y + to_nchw(np.broadcast_to(noise, to_nhwc(y).shape))
    return y
