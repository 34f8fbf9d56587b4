r"""Exports a checkpoint as a SavedModel that captions JPEG bytes with beam search.

    bazel run //im2txt:export_saved_model -- \
        --checkpoint_path=MODEL/train --vocab_file=DATA/word_counts.txt --export_dir=EXPORT

Serving signature `serving_default`: jpegs (string [B]) -> captions (string [B, beam_size]),
log_probs (float32 [B, beam_size]) and valid (bool [B]: False for a string that does not decode,
whose row has "" and -inf; the batch's other images are captioned all the same). It loads with tf.saved_model.load alone, without this
project, and captions as run_inference does (see im2txt/inference/serving.py).

A model with a concept head (model.num_concepts > 0) also returns concepts (string [B, k], the
top-k concept words, best first) and concept_probs (float32 [B, k]), k = min(5, the number of
concepts), as run_inference shows them. Their words are built into the SavedModel from
concepts.txt beside --vocab_file (where build_mscoco_data writes it), or --concepts_file; without
that file such a model is an error (exit 2).
"""

import sys

from absl import flags

from im2txt import console
from im2txt.inference import captioning
from im2txt.inference import serving

# Beam settings default to the `inference` section of the checkpoint's config.json.
_FROM_CONFIG = " (default: the checkpoint's config.json, `inference` section)"
_INFERENCE_FLAGS = ("beam_size", "max_caption_length", "length_normalization_factor")

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_path", None,
                    "Model checkpoint file or directory containing a model checkpoint file.")
flags.DEFINE_string("vocab_file", None, "Text file containing the vocabulary.")
flags.DEFINE_string("export_dir", None, "Directory to write the SavedModel to (must not exist).")
flags.DEFINE_integer("beam_size", None,
                     "Captions kept at each step, and returned." + _FROM_CONFIG)
flags.DEFINE_integer("max_caption_length", None,
                     "Maximum caption length in ids, <S> included." + _FROM_CONFIG)
flags.DEFINE_float("length_normalization_factor", None,
                   "If > 0, complete captions are ranked by logprob / length**factor."
                   + _FROM_CONFIG)
flags.DEFINE_string("concepts_file", "",
                    "The concept words of a model with a concept head (the data's "
                    "concepts.txt). Default: concepts.txt beside --vocab_file.")


def main(argv):
  del argv  # Unused.
  given = {name: FLAGS[name].value for name in _INFERENCE_FLAGS
           if FLAGS[name].value is not None}
  try:
    inference_config = captioning.inference_config(FLAGS.checkpoint_path, given)
    path = serving.export_saved_model(FLAGS.checkpoint_path, FLAGS.vocab_file, FLAGS.export_dir,
                                      inference_config, concepts_file=FLAGS.concepts_file)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    print(f"Error: {e}", file=sys.stderr)
    return 2
  print(f"SavedModel written to {path}")
  return 0


def run():
  """The `im2txt-export` console script (and `python -m im2txt.export_saved_model`)."""
  console.run(main, __name__, ["checkpoint_path", "vocab_file", "export_dir"])


if __name__ == "__main__":
  run()
