"""The version of vaegen, imported by anything that records it (config.json, eval.json, reports)."""

__version__ = "0.1.0"
