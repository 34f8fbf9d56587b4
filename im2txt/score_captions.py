r"""Captions a whole split and scores it as the COCO caption evaluation server does.

    python -m im2txt.score_captions --checkpoint_path=MODEL/train \
        --vocab_file=DATA/word_counts.txt --annotations_file=captions_val2014.json \
        --image_dir=val2014 --results_file=OUT/results.json
    # or the Karpathy test split (the papers' 5,000 images):
    python -m im2txt.score_captions ... --karpathy_split_file=dataset_coco.json --split=test \
        --image_dir=COCO --results_file=OUT/results.json

writes OUT/results.json (COCO results: one caption per image) and OUT/results.per_image.json,
and prints BLEU-1..4, METEOR, ROUGE-L and CIDEr (pycocoevalcap's scorers after its PTB tokenizer,
against the annotation file's raw captions). Images that do not decode are named and skipped;
a missing image or a malformed annotation file is an error (exit code 2).
"""

import sys

from absl import flags
from absl import logging

from im2txt import console
from im2txt.evaluation import caption_metrics
from im2txt.evaluation import caption_scoring

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_path", None,
                    "Model checkpoint file or directory containing a model checkpoint file.")
flags.DEFINE_string("vocab_file", None, "Text file containing the vocabulary.")
flags.DEFINE_string("annotations_file", "", "COCO captions JSON whose images are scored.")
flags.DEFINE_string("karpathy_split_file", "",
                    "Karpathy split JSON (dataset_coco.json) instead of --annotations_file.")
flags.DEFINE_enum("split", "test", ["train", "val", "test"],
                  "The Karpathy split to score (train includes restval).")
flags.DEFINE_string("image_dir", None, "Folder of the images (the COCO root for a Karpathy "
                    "split file, whose entries name their own subfolder).")
flags.DEFINE_string("results_file", None, "Where to write the COCO results JSON.")
flags.DEFINE_integer("max_images", 0, "Score only the first N images of the split (0: all).")
flags.DEFINE_integer("beam_size", None, "Overrides config.json's inference.beam_size.")
flags.DEFINE_integer("max_caption_length", None,
                     "Overrides config.json's inference.max_caption_length.")
flags.DEFINE_float("length_normalization_factor", None,
                   "Overrides config.json's inference.length_normalization_factor.")
flags.DEFINE_integer("batch_size", None, "Overrides config.json's inference.batch_size.")


def main(argv):
  del argv  # Unused.
  logging.set_verbosity(logging.INFO)
  options = caption_scoring.ScoreOptions(
      checkpoint_path=FLAGS.checkpoint_path, vocab_file=FLAGS.vocab_file,
      image_dir=FLAGS.image_dir, results_file=FLAGS.results_file,
      annotations_file=FLAGS.annotations_file, karpathy_split_file=FLAGS.karpathy_split_file,
      split=FLAGS.split, max_images=FLAGS.max_images, beam_size=FLAGS.beam_size,
      max_caption_length=FLAGS.max_caption_length,
      length_normalization_factor=FLAGS.length_normalization_factor,
      batch_size=FLAGS.batch_size)
  try:
    result = caption_scoring.score_split(options)
  except (ValueError, OSError, RuntimeError) as e:  # RuntimeError: Java (tokenizer, METEOR).
    print(f"Error: {e}", file=sys.stderr)
    return 2
  print(f"Scored {result.num_images} images; results in {result.results_file}, per-image "
        f"scores in {result.per_image_file}")
  if result.failed:
    print(f"{len(result.failed)} image(s) could not be captioned and were skipped")
  for name in caption_metrics.METRIC_NAMES:
    print(f"{name}: {result.metrics[name]:.4f}")
  return 0


def run():
  """The `im2txt-score-captions` console script (and `python -m im2txt.score_captions`)."""
  console.run(main, __name__, ["checkpoint_path", "vocab_file", "image_dir", "results_file"])


if __name__ == "__main__":
  run()
