"""Neural network layers and models: recurrent cells and stacks, attention, initialisation,
the encoder, the decoder and the sequence-to-sequence model."""
