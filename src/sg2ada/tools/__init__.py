"""Library code behind the inference commands (`sg2ada generate`, `style-mix`, `interpolate`,
`project`, `export`): `common` (seed rule, quantisation, argument checks), `generate` (seeds,
projected ws, style mixing, interpolation), `video` (GIF/MP4), `projector` (image -> W), `export`
(SavedModel / TFLite). Submodules import TensorFlow lazily; import them explicitly.
"""
