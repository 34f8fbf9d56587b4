"""Inference: batched beam search, captioning JPEG files, the caption page, the SavedModel."""
