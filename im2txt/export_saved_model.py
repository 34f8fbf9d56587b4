r"""Exports a checkpoint as a SavedModel that captions JPEG bytes with beam search.

    bazel run //im2txt:export_saved_model -- \
        --checkpoint_path=MODEL/train --vocab_file=DATA/word_counts.txt --export_dir=EXPORT

Serving signature `serving_default`: jpegs (string [B]) -> captions (string [B, beam_size]),
log_probs (float32 [B, beam_size]). It loads with tf.saved_model.load alone, without this
project, and captions as run_inference does (see im2txt/serving.py).
"""

import sys

from absl import app
from absl import flags

from im2txt import configuration
from im2txt import serving

_DEFAULTS = configuration.InferenceConfig()

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_path", None,
                    "Model checkpoint file or directory containing a model checkpoint file.")
flags.DEFINE_string("vocab_file", None, "Text file containing the vocabulary.")
flags.DEFINE_string("export_dir", None, "Directory to write the SavedModel to (must not exist).")
flags.DEFINE_integer("beam_size", _DEFAULTS.beam_size, "Captions kept at each step, and returned.")
flags.DEFINE_integer("max_caption_length", _DEFAULTS.max_caption_length,
                     "Maximum caption length in ids, <S> included.")
flags.DEFINE_float("length_normalization_factor", _DEFAULTS.length_normalization_factor,
                   "If > 0, complete captions are ranked by logprob / length**factor.")


def main(argv):
  del argv  # Unused.
  inference_config = configuration.InferenceConfig(
      beam_size=FLAGS.beam_size, max_caption_length=FLAGS.max_caption_length,
      length_normalization_factor=FLAGS.length_normalization_factor)
  try:
    path = serving.export_saved_model(FLAGS.checkpoint_path, FLAGS.vocab_file, FLAGS.export_dir,
                                      inference_config)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    print(f"Error: {e}", file=sys.stderr)
    return 2
  print(f"SavedModel written to {path}")
  return 0


if __name__ == "__main__":
  # Here, not at import, so that tests importing this module run without these flags.
  flags.mark_flags_as_required(["checkpoint_path", "vocab_file", "export_dir"])
  app.run(main)
