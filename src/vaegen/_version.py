"""The version of vaegen, imported by anything that records it (config.json, eval.json, reports)."""

__version__ = "0.2.0"  # CHANGELOG.md says what changed since 0.1.0
