"""Carvana-style image segmentation: data, models, K-fold training, OOF tuning and submissions."""

__version__ = "0.1.0"
