"""The multimodal network of seed 001 (encoders, gated cross-attention fusion, reasoning core, decoders).

Built in issue #3; this package is the model's home in the layout of shared/DESIGN.md.
"""
