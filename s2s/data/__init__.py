"""Data: tokenizers, parallel corpora (local files or the hub) and length-bucketed batches."""
