"""Model variants: specs as data, the builder, pretrained weights and per-layer summaries."""
