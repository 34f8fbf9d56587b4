r"""Captions JPEG files with beam search, as the original im2txt run_inference.

    bazel run //im2txt:run_inference -- \
        --checkpoint_path=MODEL/train --vocab_file=DATA/word_counts.txt \
        --input_files="images/*.jpg,more/COCO_val2014_000000224477.jpg"

prints, per image, the original's lines:
    Captions for image COCO_val2014_000000224477.jpg:
      0) a man riding a wave on top of a surfboard . (p=0.040413)
or, with --output_format=json, one JSON object per image, or with --output_format=html
--output_file=captions.html, one page to open in a browser: each image inline with its captions
and probabilities, and the files that could not be captioned, with the reason.

A model with a concept head (model.num_concepts > 0) also shows what its encoder sees: each
image's --num_concepts_shown (5) most probable concepts, best first, in every format; in text,
one more line per image:
      concepts: red (0.98), circle (0.91), white (0.75), background (0.62), square (0.40)
in JSON, "concepts": [{"word": "red", "probability": 0.9812}, ...]. Their words come from
concepts.txt beside --vocab_file (where build_mscoco_data writes it), or --concepts_file. Without
that file such a model is an error (exit 2), unless --num_concepts_shown=0. A model without a
head shows its captions alone, exactly as before.

The model's sizes come from the config.json beside the checkpoint. Exit code 1 if any file
could not be captioned (the others still are), 2 on a bad checkpoint, vocabulary, concepts file
or pattern.
"""

import io
import sys

from absl import flags

from im2txt import console
from im2txt import file_io
from im2txt.inference import captioning

# Beam settings default to the `inference` section of the checkpoint's config.json.
_FROM_CONFIG = " (default: the checkpoint's config.json, `inference` section)"
_INFERENCE_FLAGS = ("beam_size", "max_caption_length", "length_normalization_factor",
                    "batch_size")

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_path", None,
                    "Model checkpoint file or directory containing a model checkpoint file.")
flags.DEFINE_string("vocab_file", None, "Text file containing the vocabulary.")
flags.DEFINE_string("input_files", None,
                    "File pattern or comma-separated list of file patterns of image files.")
flags.DEFINE_integer("beam_size", None, "Captions kept at each step, and shown." + _FROM_CONFIG)
flags.DEFINE_integer("max_caption_length", None,
                     "Maximum caption length in ids, <S> included (max_caption_length - 1 "
                     "decoding steps)." + _FROM_CONFIG)
flags.DEFINE_float("length_normalization_factor", None,
                   "If > 0, complete captions are ranked by logprob / length**factor."
                   + _FROM_CONFIG)
flags.DEFINE_integer("batch_size", None,
                     "Images captioned together in one compiled beam search." + _FROM_CONFIG)
flags.DEFINE_enum("output_format", "text", list(captioning.OUTPUT_FORMATS),
                  "text: the original's lines; json: one JSON object per image and line; "
                  "html: one self-contained page, each image inline with its captions.")
flags.DEFINE_string("output_file", "",
                    "Write the output to this file (atomically, when complete) instead of "
                    "stdout, e.g. captions.html; open it in a browser.")
flags.DEFINE_string("concepts_file", "",
                    "The concept words of a model with a concept head (the data's "
                    "concepts.txt). Default: concepts.txt beside --vocab_file.")
flags.DEFINE_integer("num_concepts_shown", 5,
                     "For a model with a concept head: the most probable concepts shown per "
                     "image, best first. 0: none (and no concepts file needed).", lower_bound=0)


def main(argv):
  del argv  # Unused.
  given = {name: FLAGS[name].value for name in _INFERENCE_FLAGS
           if FLAGS[name].value is not None}
  try:
    inference_config = captioning.inference_config(FLAGS.checkpoint_path, given)
    out = io.StringIO() if FLAGS.output_file else sys.stdout
    code = captioning.caption_files(FLAGS.checkpoint_path, FLAGS.vocab_file, FLAGS.input_files,
                                    inference_config, FLAGS.output_format, out=out,
                                    concepts_file=FLAGS.concepts_file,
                                    num_concepts_shown=FLAGS.num_concepts_shown)
    if FLAGS.output_file:
      file_io.write_file(FLAGS.output_file, out.getvalue())
      print(f"Wrote {FLAGS.output_file}", file=sys.stderr)
    return code
  except (ValueError, FileNotFoundError) as e:
    print(f"Error: {e}", file=sys.stderr)
    return 2


def run():
  """The `im2txt-run-inference` console script (and `python -m im2txt.run_inference`)."""
  console.run(main, __name__, ["checkpoint_path", "vocab_file", "input_files"])


if __name__ == "__main__":
  run()
