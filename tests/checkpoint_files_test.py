"""A corrupt checkpoint is named, with the newest intact one beside it, by every binary that
restores one: run_inference, export_saved_model, evaluate (which skips it and goes on), the
trainer (resuming) and convert_checkpoint's reader."""

import dataclasses
import glob
import io
import json
import os
import subprocess
import sys

import tensorflow as tf

from im2txt import checkpoint_files
from im2txt import configuration
from im2txt.evaluation import checkpoint_evaluator
from im2txt.inference import captioning
from im2txt.interop import original_checkpoint
from im2txt.training import trainer
from tests import inference_testutil
from tests import training_testdata as td


def _run_main(module, flags):
  """Runs `python -m module FLAGS` as a user does -> (exit code, stderr)."""
  env = dict(os.environ, PYTHONPATH=td.repo_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))
  process = subprocess.run([sys.executable, "-m", module] + flags, capture_output=True,
                           text=True, env=env, cwd=td.repo_root(), timeout=300, check=False)
  return process.returncode, process.stderr


class CheckpointFilesTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # Built (and calibrated) once; each test saves its own checkpoints of it, and spoils them.
    cls.config = inference_testutil.tiny_config(vocab_size=8)
    cls.model = inference_testutil.random_model(cls.config, seed=5)

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.train_dir = os.path.join(self.tmp, "train")
    checkpoint = tf.train.Checkpoint(model=self.model, step=tf.Variable(1, dtype=tf.int64))
    manager = tf.train.CheckpointManager(checkpoint, self.train_dir, max_to_keep=5)
    self.first = manager.save(checkpoint_number=1)
    self.latest = manager.save(checkpoint_number=2)
    configuration.save_config(self.config, self.train_dir)
    self.vocab_file = inference_testutil.write_vocab(os.path.join(self.tmp, "word_counts.txt"))
    self.jpegs = inference_testutil.write_jpegs(os.path.join(self.tmp, "images"), 1)
    self.data = glob.glob(self.latest + ".data-*")[0]

  def _cut_data(self):
    with open(self.data, "rb") as f:
      data = f.read()
    with open(self.data, "wb") as f:
      f.write(data[:len(data) // 2])

  def _expected(self, problem):
    return (f"Checkpoint {self.latest} is corrupt: {problem}. The newest intact checkpoint "
            f"beside it is {self.first}: give it by --checkpoint_path={self.first}.")

  def test_problems_name_the_bad_file(self):
    self.assertIsNone(checkpoint_files.checkpoint_problem(self.latest))
    self._cut_data()
    self.assertEqual(checkpoint_files.checkpoint_problem(self.latest),
                     f"{self.data}: cut short (Read less bytes than requested)")
    self.assertEqual(checkpoint_files.newest_intact_checkpoint(self.train_dir), self.first)
    index = self.latest + ".index"
    with open(index, "r+b") as f:
      f.truncate(20)
    self.assertEqual(checkpoint_files.checkpoint_problem(self.latest),
                     f"{index}: file is too short to be an sstable")
    os.remove(index)
    self.assertEqual(checkpoint_files.checkpoint_problem(self.latest), f"{index}: missing")

  def test_run_inference_and_export_name_it_without_a_traceback(self):
    self._cut_data()
    expected = self._expected(f"{self.data}: cut short (Read less bytes than requested)")
    code, err = _run_main("im2txt.run_inference", [
        f"--checkpoint_path={self.train_dir}", f"--vocab_file={self.vocab_file}",
        f"--input_files={self.jpegs[0]}"])
    self.assertEqual((code, err.strip().splitlines()[-1]), (2, f"Error: {expected}"))
    self.assertNotIn("Traceback", err)
    export_dir = os.path.join(self.tmp, "export")
    code, err = _run_main("im2txt.export_saved_model", [
        f"--checkpoint_path={self.train_dir}", f"--vocab_file={self.vocab_file}",
        f"--export_dir={export_dir}"])
    self.assertEqual((code, err.strip().splitlines()[-1]), (2, f"Error: {expected}"))
    self.assertFalse(os.path.exists(export_dir))
    # The intact one, named as the message says, works: what run_inference's main does with
    # --checkpoint_path={self.first}, in this process (the binary's start is tested above).
    code = captioning.caption_files(self.first, self.vocab_file, self.jpegs[0],
                                    captioning.inference_config(self.first, {}), out=io.StringIO())
    self.assertEqual(code, 0)

  def test_evaluator_skips_it_naming_it(self):
    self._cut_data()
    config = inference_testutil.tiny_config(vocab_size=8)
    pattern = td.write_shards(os.path.join(self.tmp, "data"),
                              td.colour_examples({0: [3, 4], 1: [5, 6]}), 1, name="val")
    evaluator = checkpoint_evaluator.CheckpointEvaluator(config, pattern)
    with self.assertRaises(checkpoint_evaluator.EvaluationError) as raised:
      evaluator.restore(checkpoint_evaluator.CheckpointRef(self.latest, 2))
    self.assertEqual(str(raised.exception),
                     self._expected(f"{self.data}: cut short (Read less bytes than requested)"))
    self.assertEqual(evaluator.restore(checkpoint_evaluator.CheckpointRef(self.first, 1)), 1)

  def test_convert_checkpoint_names_it(self):
    index = self.latest + ".index"
    with open(index, "r+b") as f:
      f.truncate(20)
    with self.assertRaises(checkpoint_files.CorruptCheckpointError) as raised:
      original_checkpoint.OriginalCheckpoint(self.latest)
    self.assertEqual(str(raised.exception),
                     self._expected(f"{index}: file is too short to be an sstable"))


class TrainerResumeTest(tf.test.TestCase):

  def test_trainer_names_a_corrupt_latest_checkpoint_and_how_to_resume(self):
    tmp = self.create_tempdir().full_path
    pattern = td.write_shards(os.path.join(tmp, "data"),
                              td.colour_examples({0: [3, 4], 1: [5, 6]}), 1)
    train_dir = os.path.join(tmp, "train")
    config = td.tiny_config(save_checkpoint_steps=1)
    options = trainer.TrainOptions(input_file_pattern=pattern, train_dir=train_dir,
                                   number_of_steps=2, seed=1)
    trainer.train(config, options)
    data = glob.glob(os.path.join(train_dir, "ckpt-2.data-*"))[0]
    with open(data, "r+b") as f:
      f.truncate(os.path.getsize(data) // 2)
    options.number_of_steps = 3
    with self.assertRaises(checkpoint_files.CorruptCheckpointError) as raised:
      trainer.train(config, options)
    self.assertEqual(
        str(raised.exception),
        f"Checkpoint {train_dir}/ckpt-2 is corrupt: {data}: cut short (Read less bytes than "
        f"requested). The newest intact checkpoint beside it is {train_dir}/ckpt-1. To resume "
        f"from it, rerun with --resume_from=ckpt-1 (the checkpoints after it are moved into "
        f"{train_dir}/set_aside/).")

    # --resume_from that names no intact checkpoint of train_dir: refused, nothing written.
    before = sorted(os.listdir(train_dir))
    for given, message in (
        ("ckpt-9", f"--resume_from=ckpt-9: {train_dir}/ckpt-9.index: missing. The newest intact "
                   f"checkpoint of {train_dir} is {train_dir}/ckpt-1"),
        ("ckpt-2", f"--resume_from=ckpt-2: {data}: cut short (Read less bytes than requested)."),
        (os.path.join(tmp, "ckpt-1"), f"--resume_from={tmp}/ckpt-1: not a checkpoint of "
                                      f"--train_dir {train_dir}"),
        ("../train/../ckpt-1", "--resume_from=../train/../ckpt-1: not a checkpoint of")):
      with self.assertRaises(ValueError) as raised:
        trainer.train(config, dataclasses.replace(options, resume_from=given))
      self.assertTrue(str(raised.exception).startswith(message), str(raised.exception))
    self.assertEqual(sorted(os.listdir(train_dir)), before)

    # Doing as told resumes from step 1; ckpt-2's files are kept aside, and step 2 saved anew.
    corrupt = {os.path.basename(p): _read_bytes(p)
               for p in glob.glob(os.path.join(train_dir, "ckpt-2.*"))}
    result = trainer.train(config, dataclasses.replace(options, resume_from="ckpt-1"))
    self.assertEqual((result.start_step, result.global_step), (1, 3))
    [aside] = glob.glob(os.path.join(train_dir, "set_aside", "*-*"))
    self.assertEqual({name: _read_bytes(os.path.join(aside, name)) for name in corrupt}, corrupt)
    self.assertEqual(sorted(os.listdir(aside)), sorted(corrupt))
    self.assertIsNone(checkpoint_files.checkpoint_problem(os.path.join(train_dir, "ckpt-2")))
    state = tf.train.get_checkpoint_state(train_dir)
    self.assertEqual([os.path.basename(p) for p in state.all_model_checkpoint_paths],
                     ["ckpt-1", "ckpt-2", "ckpt-3"])
    with open(os.path.join(train_dir, "set_aside", "resumes.json")) as f:
      [resume] = json.load(f)["resumes"]
    self.assertEqual((resume["checkpoint"], sorted(resume["moved"])),
                     ("ckpt-1", sorted(f"{os.path.basename(aside)}/{n}" for n in corrupt)))

    # The same command again (a restarted job keeps its flags) goes on from its own ckpt-3.
    result = trainer.train(config, dataclasses.replace(options, resume_from="ckpt-1",
                                                       number_of_steps=4))
    self.assertEqual((result.start_step, result.global_step), (3, 4))
    self.assertEqual(len(glob.glob(os.path.join(train_dir, "set_aside", "*-*"))), 1)
    # Also once the checkpoint manager has deleted ckpt-1 (it keeps the last few).
    for path in glob.glob(os.path.join(train_dir, "ckpt-1.*")):
      os.remove(path)
    result = trainer.train(config, dataclasses.replace(options, resume_from="ckpt-1",
                                                       number_of_steps=5))
    self.assertEqual((result.start_step, result.global_step), (4, 5))

    # Rolling back to an intact earlier checkpoint: ckpt-3 to ckpt-5 go aside.
    result = trainer.train(config, dataclasses.replace(options, resume_from=f"{train_dir}/ckpt-2",
                                                       number_of_steps=3))
    self.assertEqual((result.start_step, result.global_step), (2, 3))
    # The step saved after it is corrupt: the same flag rolls back again (a latest that does not
    # read whole is no progress to keep).
    data = glob.glob(os.path.join(train_dir, "ckpt-3.data-*"))[0]
    with open(data, "r+b") as f:
      f.truncate(os.path.getsize(data) // 2)
    result = trainer.train(config, dataclasses.replace(options, resume_from="ckpt-2",
                                                       number_of_steps=3))
    self.assertEqual((result.start_step, result.global_step), (2, 3))
    with open(os.path.join(train_dir, "set_aside", "resumes.json")) as f:
      resumes = json.load(f)["resumes"]
    self.assertEqual([(r["checkpoint"], len(r["moved"])) for r in resumes],
                     [("ckpt-1", len(corrupt)), ("ckpt-2", 6), ("ckpt-2", 2)])


def _read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


if __name__ == "__main__":
  tf.test.main()
