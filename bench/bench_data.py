"""Generated training records for the benchmarks: textured JPEGs with random captions."""

import os

import numpy as np
import tensorflow as tf

from im2txt import sequence_example


def write_records(directory: str, num_images: int, jpeg_size: int, vocab_size: int,
                  captions_per_image: int = 1, num_shards: int = 4) -> str:
  """Writes num_images random-noise JPEGs, each with `captions_per_image` random captions of 8-15
  words (its records consecutive in one shard, as build_mscoco_data writes them); returns the
  shards' glob pattern."""
  rng = np.random.default_rng(0)
  paths = [os.path.join(directory, f"train-{i:05d}-of-{num_shards:05d}")
           for i in range(num_shards)]
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  for i in range(num_images):
    image = rng.integers(0, 256, [jpeg_size, jpeg_size, 3], dtype=np.uint8)
    jpeg = tf.io.encode_jpeg(image, quality=90).numpy()
    for _ in range(captions_per_image):
      ids = [1] + rng.integers(3, vocab_size, rng.integers(8, 16)).tolist() + [2]
      record = sequence_example.make_sequence_example(i, jpeg, [f"w{t}" for t in ids], ids)
      writers[i % num_shards].write(record.SerializeToString())
  for w in writers:
    w.close()
  return os.path.join(directory, f"train-?????-of-{num_shards:05d}")
