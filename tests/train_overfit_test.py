"""A tiny model overfits a handful of captions; greedy decoding then reproduces them.

The colour distortions are switched off here: a random, frozen InceptionV3 is chaotic in them
(measured: the features of one image under distortion spread 4x further than the distance
between the 4 images' mean features), so no decoder could tell the images apart in a few hundred
steps. The distortions have their own tests (image_processing_test.py).
"""

import os
from unittest import mock

import tensorflow as tf

from im2txt.model import image_processing
from im2txt.model import show_and_tell_model
from im2txt.training import trainer
from tests import training_testdata as td

# One caption per solid-colour image; the words overlap so the image has to matter.
CAPTIONS = {0: [3, 4, 5], 1: [3, 6, 7, 8], 2: [9, 4, 10], 3: [11, 6, 12, 13, 14]}
MAX_WORDS = 8


def greedy_caption(model, image) -> list:
  state = model.initial_state(image[tf.newaxis])
  word, words = td.START_ID, []
  for _ in range(MAX_WORDS):
    log_probs, state = model.step(tf.constant([word], tf.int64), state)
    word = int(tf.argmax(log_probs[0]))
    if word == td.END_ID:
      break
    words.append(word)
  return words


class OverfitTest(tf.test.TestCase):

  def test_tiny_model_learns_and_decodes_its_captions(self):
    tmp = self.create_tempdir().full_path
    examples = td.colour_examples(CAPTIONS)
    pattern = td.write_shards(os.path.join(tmp, "data"), examples, 2)
    config = td.tiny_config(vocab_size=16, units=64, lstm_keep=1.0, batch_size=4,
                            summary_every_n_steps=50)
    options = trainer.TrainOptions(input_file_pattern=pattern,
                                   train_dir=os.path.join(tmp, "train"), number_of_steps=200,
                                   log_every_n_steps=50, seed=3)
    with mock.patch.object(image_processing, "distort_image", lambda image, seed: image):
      result = trainer.train(config, options)
    self.assertGreater(result.first_loss, 2.0)  # about ln(16) = 2.77 at the start
    self.assertLess(result.last_loss, result.first_loss / 20)

    model = show_and_tell_model.ShowAndTellModel(config.model)
    model.build_all()
    tf.train.Checkpoint(model=model).restore(result.last_checkpoint).expect_partial()
    decoded = {}
    for image_id, jpeg, caption in examples:
      image = image_processing.process_image(jpeg, config.model, is_training=False)
      decoded[image_id] = greedy_caption(model, image)
    self.assertEqual(decoded, CAPTIONS)


if __name__ == "__main__":
  tf.test.main()
