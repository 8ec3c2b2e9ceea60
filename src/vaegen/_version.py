"""The version of vaegen, imported by anything that records it (config.json, eval.json, reports)."""

# 0.2.0.dev0: on the way to 0.2 (CHANGELOG.md), so that what it records is told from 0.1.0's
__version__ = "0.2.0.dev0"
