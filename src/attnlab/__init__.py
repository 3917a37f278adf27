"""attnlab: build, train, look inside and understand Transformers."""

__version__ = "0.1.0"
