r"""Converts a model trained by the original im2txt (TF1) into a train_dir of this project.

    python -m im2txt.convert_checkpoint --original_checkpoint=PATH/model.ckpt-2000000 \
        --vocab_file=PATH/word_counts.txt --output_dir=MODEL/train
    # (or bazel run //im2txt:convert_checkpoint -- ... with absolute paths)

writes MODEL/train/ckpt-2000000 and MODEL/train/config.json (vocabulary, embedding and LSTM sizes
read from the checkpoint); then run_inference, export_saved_model, evaluate and phase-2 training
take MODEL/train as they take a train_dir of ours. The LSTM variables of every TF1 era are read
(`lstm/basic_lstm_cell/kernel|bias`, `.../weights|biases`, `lstm/BasicLSTMCell/Linear/Matrix|
Bias`: TF 0.x to 1.x), V1 single-file checkpoints too, and word_counts.txt files written by the
original builder under Python 3 (`b'word' count` lines). Exit code 2, with nothing written to
output_dir, on a checkpoint that is not an im2txt model or cannot be read, a vocabulary larger
than the model's, or an output_dir that is not a new or empty local directory.
"""

import sys

from absl import flags
from absl import logging

from im2txt import console
from im2txt.interop import original_checkpoint

FLAGS = flags.FLAGS
flags.DEFINE_string("original_checkpoint", None,
                    "Checkpoint prefix written by the original im2txt (e.g. model.ckpt-2000000), "
                    "one of its files, or its train directory (the checkpoint its `checkpoint` "
                    "index names, looked up inside that directory).")
flags.DEFINE_string("vocab_file", None, "The word_counts.txt the model was trained with.")
flags.DEFINE_string("output_dir", None, "The train_dir to write (new, or an empty directory).")


def main(argv):
  del argv  # Unused.
  logging.set_verbosity(logging.INFO)
  try:
    path = original_checkpoint.convert(FLAGS.original_checkpoint, FLAGS.vocab_file,
                                       FLAGS.output_dir)
  except (ValueError, OSError) as e:  # OSError: FileNotFoundError, permissions, disk space.
    print(f"Error: {e}", file=sys.stderr)
    return 2
  print(f"Converted checkpoint written to {path}\n"
        f"Caption with: python -m im2txt.run_inference --checkpoint_path={FLAGS.output_dir} "
        f"--vocab_file={FLAGS.vocab_file} --input_files=IMAGES")
  return 0


def run():
  """The `im2txt-convert-checkpoint` console script (`python -m im2txt.convert_checkpoint`)."""
  console.run(main, __name__, ["original_checkpoint", "vocab_file", "output_dir"])


if __name__ == "__main__":
  run()
