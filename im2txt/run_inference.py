r"""Captions JPEG files with beam search, as the original im2txt run_inference.

    bazel run //im2txt:run_inference -- \
        --checkpoint_path=MODEL/train --vocab_file=DATA/word_counts.txt \
        --input_files="images/*.jpg,more/COCO_val2014_000000224477.jpg"

prints, per image, the original's lines:
    Captions for image COCO_val2014_000000224477.jpg:
      0) a man riding a wave on top of a surfboard . (p=0.040413)
The model's sizes come from the config.json beside the checkpoint. Exit code 1 if any file
could not be captioned (the others still are), 2 on a bad checkpoint, vocabulary or pattern.
"""

import sys

from absl import app
from absl import flags

from im2txt import configuration
from im2txt import inference

_DEFAULTS = configuration.InferenceConfig()

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_path", None,
                    "Model checkpoint file or directory containing a model checkpoint file.")
flags.DEFINE_string("vocab_file", None, "Text file containing the vocabulary.")
flags.DEFINE_string("input_files", None,
                    "File pattern or comma-separated list of file patterns of image files.")
flags.DEFINE_integer("beam_size", _DEFAULTS.beam_size, "Captions kept at each step, and shown.")
flags.DEFINE_integer("max_caption_length", _DEFAULTS.max_caption_length,
                     "Maximum caption length in ids, <S> included (max_caption_length - 1 "
                     "decoding steps).")
flags.DEFINE_float("length_normalization_factor", _DEFAULTS.length_normalization_factor,
                   "If > 0, complete captions are ranked by logprob / length**factor.")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size,
                     "Images captioned together in one compiled beam search.")
flags.DEFINE_enum("output_format", "text", list(inference.OUTPUT_FORMATS),
                  "text: the original's lines; json: one JSON object per image and line.")


def main(argv):
  del argv  # Unused.
  inference_config = configuration.InferenceConfig(
      beam_size=FLAGS.beam_size, max_caption_length=FLAGS.max_caption_length,
      length_normalization_factor=FLAGS.length_normalization_factor,
      batch_size=FLAGS.batch_size)
  try:
    return inference.caption_files(FLAGS.checkpoint_path, FLAGS.vocab_file, FLAGS.input_files,
                                   inference_config, FLAGS.output_format)
  except (ValueError, FileNotFoundError) as e:
    print(f"Error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  # Here, not at import, so that tests importing this module run without these flags.
  flags.mark_flags_as_required(["checkpoint_path", "vocab_file", "input_files"])
  app.run(main)
