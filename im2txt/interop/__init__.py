"""Interop with the original im2txt: its TF1 checkpoints read into this model."""
