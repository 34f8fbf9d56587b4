"""Tests for im2txt.training.trainer: schedule, configuration, a phase 1 run and its restart."""

import copy
import glob
import json
import os
import shutil
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf

from im2txt import configuration
from im2txt.data import inputs
from im2txt.model import show_and_tell_model
from im2txt.training import optimization
from im2txt.training import train_state
from im2txt.training import trainer
from tests import training_testdata as td

CAPTIONS = {0: [3, 4, 5], 1: [6, 7], 2: [8, 9, 10, 11], 3: [12, 5], 4: [13, 14, 4]}


class ScheduleAndConfigTest(tf.test.TestCase):

  def test_phase1_learning_rate_halves_every_8_epochs(self):
    lr = optimization.learning_rate_fn(configuration.TrainingConfig(), 32, train_inception=False)
    decay_steps = int(586363 / 32 * 8)  # 146,590 as the original
    for step, expected in [(0, 2.0), (decay_steps - 1, 2.0), (decay_steps, 1.0),
                           (2 * decay_steps + 5, 0.5)]:
      self.assertAllClose(lr(tf.constant(step, tf.int64)), expected)

  def test_phase2_learning_rate_is_constant(self):
    lr = optimization.learning_rate_fn(configuration.TrainingConfig(), 32, train_inception=True)
    self.assertAllClose(lr(tf.constant(10**6, tf.int64)), 0.0005)

  def test_inception_l2_loss_is_slims(self):
    model = show_and_tell_model.ShowAndTellModel(td.tiny_config().model)
    kernels = [l.kernel.numpy() for l in model.inception.layers
               if isinstance(l, tf.keras.layers.Conv2D)]
    self.assertLen(kernels, 94)
    expected = 4e-5 * sum(float(np.sum(k.astype(np.float64) ** 2)) / 2 for k in kernels)
    self.assertAllClose(optimization.inception_l2_loss(model, 4e-5), expected, rtol=1e-5)

  def test_resolve_config(self):
    train_dir = self.create_tempdir().full_path
    self.assertEqual(trainer.resolve_config(train_dir, "small"), configuration.small_config())
    self.assertEqual(trainer.resolve_config(train_dir), configuration.default_config())
    with self.assertRaisesRegex(ValueError, "Unknown preset"):
      trainer.resolve_config(train_dir, "huge")
    # An earlier run's config.json wins over the preset...
    tiny = td.tiny_config()
    configuration.save_config(tiny, train_dir)
    self.assertEqual(trainer.resolve_config(train_dir, "small"), tiny)
    # ...but not over an explicit config file,
    other_dir = self.create_tempdir().full_path
    other = configuration.small_config()
    other.training.train_inception_learning_rate = 0.001
    configuration.save_config(other, other_dir)
    other_file = os.path.join(other_dir, "config.json")
    self.assertEqual(trainer.resolve_config(train_dir, "default", other_file), other)
    # which must not change the model of existing checkpoints.
    with open(os.path.join(train_dir, "checkpoint"), "w") as f:
      f.write('model_checkpoint_path: "ckpt-1"\n')
    open(os.path.join(train_dir, "ckpt-1.index"), "w").close()
    with self.assertRaisesRegex(ValueError, "model section differs"):
      trainer.resolve_config(train_dir, "default", other_file)

  def test_invalid_options(self):
    for field, value in [("strategy", "tpu"), ("mixed_precision", "fp8"),
                         ("log_every_n_steps", 0)]:
      options = trainer.TrainOptions(input_file_pattern="x", train_dir="y")
      setattr(options, field, value)
      with self.assertRaisesRegex(ValueError, field.split("_")[0]):
        trainer.train(td.tiny_config(), options)

  def test_default_preset_needs_inception_weights_or_random(self):
    tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
    train_dir = os.path.join(tmp, "train")
    options = trainer.TrainOptions(input_file_pattern=os.path.join(tmp, "none-*"),
                                   train_dir=train_dir)
    # A forgotten flag stops the default preset before anything is written or read.
    with self.assertRaisesRegex(ValueError, "no --inception_checkpoint_file was given.*"
                                "--inception_checkpoint_file=random"):
      trainer.train(configuration.default_config(), options)
    self.assertFalse(os.path.exists(train_dir))
    options.inception_checkpoint_file = os.path.join(tmp, "inception_v3.ckpt")
    with self.assertRaisesRegex(FileNotFoundError, "no such file: .*inception_v3.ckpt"):
      trainer.train(configuration.default_config(), options)
    self.assertFalse(os.path.exists(train_dir))
    # A file that is neither a slim checkpoint nor a Keras .h5 is named before anything is written.
    with open(options.inception_checkpoint_file, "w") as f:
      f.write("not weights")
    with self.assertRaisesRegex(ValueError, "inception_v3.ckpt: neither a TF-slim InceptionV3 "
                                "checkpoint .* nor a Keras .h5 weights file"):
      trainer.train(configuration.default_config(), options)
    self.assertFalse(os.path.exists(train_dir))
    # The explicit opt-in, and the small preset's own default, pass the check.
    options.inception_checkpoint_file = train_state.RANDOM_INCEPTION
    train_state.check_inception_source(configuration.default_config(), options)
    options.inception_checkpoint_file = ""
    train_state.check_inception_source(configuration.small_config(), options)
    # A train_dir with a checkpoint needs no Inception source.
    tf.train.Checkpoint(step=tf.Variable(1)).save(os.path.join(train_dir, "ckpt"))
    train_state.check_inception_source(configuration.default_config(), options)


class RestartTest(tf.test.TestCase):
  """Phase 1 for 3 steps, then the same command with number_of_steps=5."""

  def test_restart_continues_step_and_schedule_with_inception_frozen(self):
    tmp = self.create_tempdir().full_path
    pattern = td.write_shards(os.path.join(tmp, "data"), td.colour_examples(CAPTIONS), 2)
    train_dir = os.path.join(tmp, "train")
    # 8 examples per epoch at batch 4, 2 epochs per decay: the rate halves after 4 steps.
    config = td.tiny_config(initial_learning_rate=1.0, num_examples_per_epoch=8,
                            num_epochs_per_decay=2.0, summary_every_n_steps=1,
                            max_checkpoints_to_keep=2)
    options = trainer.TrainOptions(input_file_pattern=pattern, train_dir=train_dir,
                                   number_of_steps=3, seed=4, steps_per_loop=1)

    first = trainer.train(config, options)
    self.assertEqual((first.start_step, first.global_step), (0, 3))
    self.assertEqual(first.last_checkpoint, os.path.join(train_dir, "ckpt-3"))
    self.assertEqual(configuration.load_config(train_dir), config)
    after_first = td.inception_values(first.last_checkpoint)
    others_first = tf.train.load_checkpoint(first.last_checkpoint).get_tensor(
        "model/lstm_cell/kernel/.ATTRIBUTES/VARIABLE_VALUE")

    config.training.save_checkpoint_steps = 1
    options.number_of_steps = 5
    # The restart reads a new input order: the restored step is folded into the seed.
    with mock.patch.object(inputs, "make_dataset", wraps=inputs.make_dataset) as make_dataset:
      second = trainer.train(config, options)
    self.assertEqual(make_dataset.call_args.kwargs["seed"], train_state.input_seed(4, 3))
    self.assertNotEqual(train_state.input_seed(4, 3), 4)
    self.assertEqual(train_state.input_seed(4, 0), 4)
    self.assertEqual((second.start_step, second.global_step), (3, 5))
    self.assertEqual(tf.train.latest_checkpoint(train_dir), os.path.join(train_dir, "ckpt-5"))
    reader = tf.train.load_checkpoint(os.path.join(train_dir, "ckpt-5"))
    self.assertEqual(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"), 5)
    # Two checkpoints kept (ckpt-3 rotated out when ckpt-5 was written).
    self.assertEqual(sorted(os.path.basename(p) for p in glob.glob(f"{train_dir}/ckpt-*.index")),
                     ["ckpt-4.index", "ckpt-5.index"])

    # Phase 1 changed no Inception weight or batch-norm statistic, but did train the LSTM.
    after_second = td.inception_values(os.path.join(train_dir, "ckpt-5"))
    self.assertLen(after_second, 94 + 94 * 3)  # kernels; beta, moving mean and variance
    for key, value in after_second.items():
      self.assertAllEqual(after_first[key], value, msg=key)
    self.assertNotAllClose(
        others_first, reader.get_tensor("model/lstm_cell/kernel/.ATTRIBUTES/VARIABLE_VALUE"))

    scalars = td.read_scalars(train_dir)
    # The schedule follows the restored global step: 1.0 for steps 1-4, 0.5 at step 5.
    self.assertAllClose([scalars["learning_rate"][s] for s in range(1, 6)],
                        [1.0, 1.0, 1.0, 1.0, 0.5])
    for tag in ("losses/batch_loss", "losses/total_loss", "gradient_norm",
                "caption_length/mean"):
      self.assertEqual(sorted(scalars[tag]), list(range(1, 6)), tag)
    self.assertIn("examples_per_sec", scalars)
    self.assertIn("caption_length", scalars)
    self.assertIn("input_images", scalars)
    self.assertEqual(scalars["losses/batch_loss"][5], second.last_loss)
    self.assertEqual(scalars["losses/batch_loss"][4], second.first_loss)
    for s in range(1, 6):
      # No regularisation in phase 1.
      self.assertEqual(scalars["losses/total_loss"][s], scalars["losses/batch_loss"][s])
      # Caption lengths in target tokens: between 3 ("12 5 </S>") and 5.
      self.assertBetween(scalars["caption_length/mean"][s], 3.0, 5.0)
    with open(os.path.join(train_dir, "config.json")) as f:
      self.assertEqual(json.load(f), configuration.config_to_dict(config))


class FusedStepsTest(tf.test.TestCase):
  """steps_per_loop > 1 runs the same steps on the same batches as one step per call."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.pattern = td.write_shards(os.path.join(cls.tmp, "data"), td.colour_examples(CAPTIONS), 2)
    # No dropout: Keras' dropout draws from op seeds, which differ between compiled functions.
    # 8 examples per epoch at batch 4, 2 epochs per decay: the rate halves after every 4 steps.
    cls.config = td.tiny_config(lstm_keep=1.0, initial_learning_rate=1.0,
                                num_examples_per_epoch=8, num_epochs_per_decay=2.0,
                                summary_every_n_steps=1, save_checkpoint_steps=0)
    # The two runs the tests compare, made once. The one-step-per-call run also saves by time
    # (test_checkpoints_by_time): under a clock that moves 10 s whenever the trainer reads it,
    # every 25 s. A save writes the weights and changes none of them.
    by_time = copy.deepcopy(cls.config)
    by_time.training.save_checkpoint_secs = 25
    by_time.training.max_checkpoints_to_keep = 10
    clock = mock.Mock()
    clock.time.side_effect = (10.0 * i for i in range(10**6))
    with mock.patch.object(trainer, "time", clock):
      cls.single, cls.single_dir = cls._train("single", 1, 7, by_time)
    cls.fused, cls.fused_dir = cls._train("fused", 3, 7)  # Loops of 1, 3 and 3 steps.

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  @classmethod
  def _train(cls, name, steps_per_loop, number_of_steps, config=None):
    options = trainer.TrainOptions(input_file_pattern=cls.pattern,
                                   train_dir=os.path.join(cls.tmp, name), seed=3,
                                   number_of_steps=number_of_steps,
                                   steps_per_loop=steps_per_loop)
    return trainer.train(config or cls.config, options), options.train_dir

  def test_same_losses_and_weights_as_one_step_per_call(self):
    single, single_dir = self.single, self.single_dir
    fused, fused_dir = self.fused, self.fused_dir
    self.assertEqual((fused.global_step, fused.last_checkpoint),
                     (7, os.path.join(fused_dir, "ckpt-7")))
    self.assertAllClose(fused.first_loss, single.first_loss, rtol=1e-6)
    self.assertAllClose(fused.last_loss, single.last_loss, rtol=1e-6)
    readers = [tf.train.load_checkpoint(r.last_checkpoint) for r in (single, fused)]
    keys = [k for k in readers[0].get_variable_to_shape_map() if k.startswith("model/")]
    self.assertLen(keys, 7 + 94 * 4)
    for key in keys:
      self.assertAllClose(readers[0].get_tensor(key), readers[1].get_tensor(key), rtol=1e-5,
                          atol=1e-6, msg=key)
    # Summaries between loops, from each loop's last step: the same values as step by step.
    single_scalars, fused_scalars = td.read_scalars(single_dir), td.read_scalars(fused_dir)
    self.assertEqual(sorted(fused_scalars["losses/batch_loss"]), [1, 4, 7])
    for step in (1, 4, 7):
      for tag in ("losses/batch_loss", "learning_rate", "gradient_norm"):
        self.assertAllClose(fused_scalars[tag][step], single_scalars[tag][step], rtol=1e-5,
                            msg=f"{tag} at step {step}")
    self.assertAllClose([fused_scalars["learning_rate"][s] for s in (1, 4, 7)], [1.0, 1.0, 0.5])

  def test_checkpoints_by_time(self):
    # The single run's clock moves 10 s whenever the trainer reads it: a save every 25 s falls on
    # a few loop ends (decided before each loop, voted with its last step). The fused run's
    # save_checkpoint_secs is 0: it saves only at the end.
    for secs, train_dir, expected in ((25, self.single_dir, [3, 5, 7]),
                                      (0, self.fused_dir, [7])):
      steps = sorted(int(p.split("-")[-1][:-len(".index")])
                     for p in glob.glob(os.path.join(train_dir, "ckpt-*.index")))
      self.assertEqual(steps, expected, f"save_checkpoint_secs={secs}")

  def test_checkpoints_at_exact_steps_and_restart(self):
    config = copy.deepcopy(self.config)
    config.training.save_checkpoint_steps = 2
    config.training.max_checkpoints_to_keep = 10
    first, train_dir = self._train("restart", 3, 5, config)  # Loops: 1, 1 | 2 | 1.
    self.assertEqual(first.global_step, 5)
    second, _ = self._train("restart", 3, 9, config)  # Loops: 1 | 2 | 1.
    self.assertEqual((second.start_step, second.global_step), (5, 9))
    steps = sorted(int(p.split("-")[-1][:-len(".index")])
                   for p in glob.glob(os.path.join(train_dir, "ckpt-*.index")))
    self.assertEqual(steps, [2, 4, 5, 6, 8, 9])
    for step in steps:
      reader = tf.train.load_checkpoint(os.path.join(train_dir, f"ckpt-{step}"))
      self.assertEqual(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"), step)
    # The schedule follows the global step across the restart: halved after steps 4 and 8.
    scalars = td.read_scalars(train_dir)["learning_rate"]
    self.assertEqual(sorted(scalars), [1, 2, 4, 5, 6, 8, 9])
    self.assertAllClose([scalars[s] for s in sorted(scalars)],
                        [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25])


if __name__ == "__main__":
  tf.test.main()
