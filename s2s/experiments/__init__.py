"""Experiments over runs: ``s2s compare`` (variants x seeds, statistics) and ``s2s debug``."""
