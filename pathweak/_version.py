"""The version of pathweak (one place; ``pathweak.__version__`` and cache keys read it)."""

__version__ = "0.1.0"
