"""Decoding: greedy and beam search against a small stepper interface, ensembles, and
the translation of raw text."""
