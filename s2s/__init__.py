"""s2s: recurrent sequence-to-sequence models for translation, from one command."""

__version__ = "0.1.0"
