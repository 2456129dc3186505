"""fusion-serve: REST inference for multimodal fusion classifiers."""

__version__ = "0.1.0"
