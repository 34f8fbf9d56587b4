"""Tests for im2txt.evaluation.evaluation_loop: waiting, one evaluation per checkpoint, skips and stops."""

import json
import logging as std_logging
import os
import tempfile
import threading
import time
from unittest import mock

from absl import logging
import tensorflow as tf

from im2txt import checkpoint_files
from im2txt.evaluation import checkpoint_evaluator
from im2txt.evaluation import evaluation_loop
from tests import evaluation_testdata as testdata


class _LogLines(std_logging.Handler):
  """Collects the absl log messages (thread-safe) so a test can wait for one."""

  def __init__(self):
    super().__init__(level=std_logging.INFO)
    self.lines = []
    self._lock = threading.Lock()

  def emit(self, record):
    with self._lock:
      self.lines.append(record.getMessage())

  def text(self) -> str:
    with self._lock:
      return "\n".join(self.lines)

  def wait_for(self, fragment: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while fragment not in self.text():
      if time.monotonic() > deadline:
        raise AssertionError(f"No log line with {fragment!r} in {timeout} s; got:\n{self.text()}")
      time.sleep(0.05)


class EvaluationLoopTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.config = testdata.tiny_config()
    cls.pattern = testdata.write_val_split(os.path.join(cls.tmp.name, "data"))
    # One evaluator (the expensive part: a model and its compiled step) for every loop below.
    cls.evaluator = checkpoint_evaluator.CheckpointEvaluator(cls.config, cls.pattern)

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def setUp(self):
    super().setUp()
    root = tempfile.mkdtemp(dir=self.tmp.name)
    self.train_dir = os.path.join(root, "train")
    self.eval_dir = os.path.join(root, "eval")
    self.logs = _LogLines()
    logging.get_absl_logger().addHandler(self.logs)
    logging.set_verbosity(logging.INFO)
    self.addCleanup(logging.get_absl_logger().removeHandler, self.logs)

  def _loop(self, stop_event=None, eval_overrides=None, **options):
    eval_overrides = {"eval_interval_secs": 0.2, **(eval_overrides or {})}
    loop = evaluation_loop.EvaluationLoop(
        self.train_dir, self.eval_dir, self.pattern, eval_overrides=eval_overrides,
        options=evaluation_loop.LoopOptions(**options), stop_event=stop_event,
        evaluator=self.evaluator)
    self.addCleanup(loop.close)
    return loop

  def _save(self, step, seed):
    testdata.perturb_weights(self.evaluator.model, seed)
    return testdata.save_checkpoint(self.train_dir, self.evaluator.model, step, self.config)

  def _scalars(self):
    scalars, _ = testdata.read_events(self.eval_dir)
    return scalars

  def test_picks_up_checkpoints_written_while_it_waits(self):
    loop = self._loop(number_of_steps=20)
    results = []
    thread = threading.Thread(target=lambda: results.extend(loop.run()), daemon=True)
    thread.start()
    self.logs.wait_for(f"Checkpoint directory {self.train_dir} does not exist yet; waiting for "
                       "the trainer's first checkpoint (looking every 0.2 s)")
    path10 = self._save(10, seed=1)
    self.logs.wait_for("(step 10)")
    self.logs.wait_for("Waiting for a checkpoint newer than step 10")
    self._save(20, seed=2)
    thread.join(timeout=120)
    self.assertFalse(thread.is_alive())
    self.assertIn("The final step 20 of training (number_of_steps 20) is evaluated; done",
                  self.logs.text())
    self.assertEqual([r.step for r in results], [10, 20])
    self.assertNotEqual(results[0].perplexity, results[1].perplexity)
    # One event per checkpoint and tag, with the results' values.
    scalars = self._scalars()
    self.assertEqual(set(scalars), {"Perplexity", "Loss"})
    for tag in ("Perplexity", "Loss"):
      self.assertEqual([s for s, _ in scalars[tag]], [10, 20])
      for (_, value), result in zip(scalars[tag], results):
        self.assertAlmostEqual(value, result.scalars()[tag], places=4)
    # The value at step 10 is the perplexity of ckpt-10's weights.
    self.evaluator.restore(checkpoint_evaluator.CheckpointRef(path10, 10))
    self.assertAlmostEqual(self.evaluator.perplexity()[0], results[0].perplexity, places=9)
    state = evaluation_loop.read_state(self.eval_dir)
    self.assertEqual(state["last_evaluated_step"], 20)
    self.assertEqual(state["checkpoint_dir"], self.train_dir)

  def test_takes_the_latest_checkpoint_and_logs_the_skipped_ones(self):
    paths = [self._save(step, seed=step) for step in (10, 20, 30)]
    results = self._loop(number_of_steps=40, max_wait_secs=0.5).run()
    self.assertEqual([r.step for r in results], [30])
    for path, step in zip(paths[:2], (10, 20)):
      self.assertIn(f"Skipping {path} (step {step}): a newer checkpoint, {paths[2]}, is waiting",
                    self.logs.text())
    self.assertEqual([s for s, _ in self._scalars()["Perplexity"]], [30])

  def test_checkpoint_deleted_before_its_restore_is_skipped(self):
    self._save(10, seed=1)
    path20 = self._save(20, seed=2)
    restore = self.evaluator.restore

    def rotate_then_restore(ref):
      if ref.step == 20:  # the trainer's rotation strikes between discovery and restore
        testdata.delete_checkpoint_files(ref.path)
        self._save(30, seed=3)
      return restore(ref)

    with mock.patch.object(self.evaluator, "restore", rotate_then_restore):
      results = self._loop(max_wait_secs=0.5).run()
    self.assertEqual([r.step for r in results], [30])
    self.assertIn(f"Checkpoint {path20} was deleted before it could be evaluated (the trainer "
                  "keeps only its latest checkpoints); skipping", self.logs.text())
    self.assertEqual([s for s, _ in self._scalars()["Perplexity"]], [30])

  def test_min_global_step_and_restarts(self):
    for step in (10, 20, 30):
      self._save(step, seed=step)
    results = self._loop(eval_overrides={"min_global_step": 15}, max_wait_secs=0.3).run()
    self.assertEqual([r.step for r in results], [30])  # The latest; 20 is skipped for it.
    self.assertIn("ckpt-10: global step 10 < min_global_step 15", self.logs.text())
    self.assertIn("ckpt-20 (step 20): a newer checkpoint", self.logs.text())
    # A restarted evaluator does not redo what is in evaluation_state.json...
    self.assertEqual(self._loop(max_wait_secs=0.3).run(), [])
    self.assertIn("up to step 30 were evaluated before", self.logs.text())
    # ... but evaluates what is new; the training's final checkpoint even below min_global_step.
    self._save(40, seed=40)
    results = self._loop(eval_overrides={"min_global_step": 100}, number_of_steps=40).run()
    self.assertEqual([r.step for r in results], [40])
    self.assertEqual([s for s, _ in self._scalars()["Perplexity"]], [30, 40])
    with open(os.path.join(self.eval_dir, evaluation_loop.STATE_FILENAME)) as f:
      self.assertEqual(json.load(f)["last_evaluated_step"], 40)
    # Restarted after the final step was evaluated, it has nothing left to do.
    self.assertEqual(self._loop(number_of_steps=40).run(), [])

  def _perplexity_of(self, path, step):
    self.evaluator.restore(checkpoint_evaluator.CheckpointRef(path, step))
    return self.evaluator.perplexity()[0]

  def test_follows_a_rollback_of_the_trainer(self):
    for step in (10, 20, 30):
      self._save(step, seed=step)
    # An evaluator that has evaluated the final step of the first run and stopped.
    self.assertEqual([r.step for r in self._loop(number_of_steps=30).run()], [30])
    # train --resume_from=ckpt-10, as the trainer does it, then steps 20 and 30 trained again.
    checkpoint_files.make_latest(os.path.join(self.train_dir, "ckpt-10"), time.time())
    new20 = self._save(20, seed=200)
    # Restarted, the evaluator sees the rollback and evaluates the new step 20...
    stop = threading.Event()
    results = []
    thread = threading.Thread(target=lambda: results.extend(
        self._loop(number_of_steps=30, stop_event=stop).run()), daemon=True)
    thread.start()
    self.logs.wait_for(f"{self.train_dir} was rolled back to step 10 (train "
                       "--resume_from=ckpt-10 at ")
    self.assertIn("the events of the set-aside steps up to 30 stay in", self.logs.text())
    self.logs.wait_for("Waiting for a checkpoint newer than step 20")
    # ... and, still running, the new step 30; then it is done.
    new30 = self._save(30, seed=300)
    thread.join(timeout=120)
    self.assertFalse(thread.is_alive())
    self.assertEqual([r.step for r in results], [20, 30])
    perplexities = self._scalars()["Perplexity"]
    self.assertEqual([s for s, _ in perplexities], [30, 20, 30])
    for (_, value), (path, step) in zip(perplexities[1:], [(new20, 20), (new30, 30)]):
      self.assertAlmostEqual(value, self._perplexity_of(path, step), places=4)
    state = evaluation_loop.read_state(self.eval_dir)
    self.assertEqual(state["last_evaluated_step"], 30)
    self.assertEqual(len(state["rollbacks_followed"]), 1)
    self.assertRegex(state["rollbacks_followed"][0], r"^ckpt-10 at \d{4}-\d\d-\d\d [\d:]+ UTC$")
    # A rollback is followed once: restarted again, nothing is left to do.
    self.assertEqual(self._loop(number_of_steps=30).run(), [])
    self.assertEqual(self.logs.text().count("was rolled back"), 1)
    # A second rollback, to step 20, is followed too.
    checkpoint_files.make_latest(new20, time.time())
    new30b = self._save(30, seed=301)
    results = self._loop(number_of_steps=30).run()
    self.assertEqual([(r.checkpoint, r.step) for r in results], [(new30b, 30)])
    self.assertIn("was rolled back to step 20 (train --resume_from=ckpt-20 at ", self.logs.text())
    # An evaluator with a new eval_dir starts from the train_dir as it is: nothing to follow.
    self.eval_dir += "_new"
    self.assertEqual([r.step for r in self._loop(number_of_steps=30).run()], [30])
    self.assertEqual(self.logs.text().count("was rolled back"), 2)
    self.assertEqual(len(evaluation_loop.read_state(self.eval_dir)["rollbacks_followed"]), 2)

  def test_a_checkpoint_that_failed_before_the_rollback_is_evaluated_when_trained_again(self):
    path10 = self._save(10, seed=1)
    restore = self.evaluator.restore
    broken = []

    def first_ckpt20_gone(ref):
      if ref.step == 20 and not broken:  # The usual cause of a rollback: a broken latest.
        testdata.delete_checkpoint_files(ref.path)
        broken.append(ref.path)
      return restore(ref)

    stop = threading.Event()
    results = []
    patch = mock.patch.object(self.evaluator, "restore", first_ckpt20_gone)
    patch.start()
    self.addCleanup(patch.stop)
    thread = threading.Thread(target=lambda: results.extend(self._loop(stop_event=stop).run()),
                              daemon=True)
    thread.start()
    self.logs.wait_for("Waiting for a checkpoint newer than step 10")
    # ckpt-20 fails...
    path20 = self._save(20, seed=2)
    self.logs.wait_for(f"Checkpoint {path20} was deleted before it could be evaluated")
    # ... the trainer rolls back to ckpt-10 (not beyond the evaluator's last step) and saves
    # ckpt-20 anew: the evaluator evaluates it, though it failed at that path before.
    checkpoint_files.make_latest(os.path.join(self.train_dir, "ckpt-10"), time.time())
    new20 = self._save(20, seed=200)
    self.logs.wait_for("(step 20)")
    stop.set()
    thread.join(timeout=60)
    self.assertFalse(thread.is_alive())
    self.assertEqual([(r.checkpoint, r.step) for r in results], [(path10, 10), (new20, 20)])
    self.assertNotIn("was rolled back", self.logs.text())  # Nothing evaluated to step back.

  def test_rollbacks_before_the_state_file_need_no_following(self):
    for step in (10, 20, 30):
      self._save(step, seed=step)
    self.assertEqual([r.step for r in self._loop(number_of_steps=30).run()], [30])
    # A state file without rollbacks_followed (an older evaluator's), written 100 s ago; a
    # rollback to ckpt-20 before it, one to ckpt-10 after it.
    state_file = os.path.join(self.eval_dir, evaluation_loop.STATE_FILENAME)
    state = evaluation_loop.read_state(self.eval_dir)
    del state["rollbacks_followed"]
    evaluation_loop.write_state(self.eval_dir, state)
    now = time.time()
    os.utime(state_file, (now - 100, now - 100))
    checkpoint_files.make_latest(os.path.join(self.train_dir, "ckpt-20"), now - 200)
    checkpoint_files.make_latest(os.path.join(self.train_dir, "ckpt-10"), now)
    new20 = self._save(20, seed=200)
    results = self._loop(max_wait_secs=0.5).run()
    self.assertEqual([(r.checkpoint, r.step) for r in results], [(new20, 20)])
    self.assertIn("was rolled back to step 10 ", self.logs.text())
    self.assertNotIn("was rolled back to step 20 ", self.logs.text())
    self.assertEqual(len(evaluation_loop.read_state(self.eval_dir)["rollbacks_followed"]), 2)

  def test_once_follows_a_rollback_for_the_loops_after_it(self):
    self._save(10, seed=1)
    self._save(20, seed=2)
    self.assertEqual([r.step for r in self._loop(number_of_steps=20).run()], [20])
    checkpoint_files.make_latest(os.path.join(self.train_dir, "ckpt-10"), time.time())
    new20 = self._save(20, seed=200)
    results = self._loop(once=True).run()
    self.assertEqual([(r.checkpoint, r.step) for r in results], [(new20, 20)])
    self.assertEqual(len(evaluation_loop.read_state(self.eval_dir)["rollbacks_followed"]), 1)
    # A loop after it has nothing to redo.
    self.assertEqual(self._loop(number_of_steps=20).run(), [])
    self.assertEqual([s for s, _ in self._scalars()["Perplexity"]], [20, 20])

  def test_an_unreadable_record_of_rollbacks_is_a_warning(self):
    self._save(10, seed=1)
    record = os.path.join(self.train_dir, checkpoint_files.SET_ASIDE_DIRNAME,
                          checkpoint_files.RESUMES_FILENAME)
    os.makedirs(os.path.dirname(record))
    with open(record, "w") as f:
      f.write("{cut sh")
    with mock.patch.object(checkpoint_files, "resumes", wraps=checkpoint_files.resumes) as read:
      self.assertEqual([r.step for r in self._loop(max_wait_secs=1.0).run()], [10])
    self.assertGreaterEqual(read.call_count, 3)  # Read at every look...
    self.assertEqual(self.logs.text().count(
        "Cannot read the trainer's record of rollbacks (a rollback is followed once it reads "
        f"again): {record}: not a record of resumes"), 1)  # ... warned about once.
    state = evaluation_loop.read_state(self.eval_dir)
    self.assertNotIn("rollbacks_followed", state)
    self.assertLess(state["rollbacks_since"], time.time())

  def test_once_evaluates_the_latest_checkpoint(self):
    self._save(10, seed=1)
    path = self._save(20, seed=2)
    results = self._loop(eval_overrides={"min_global_step": 100}, once=True).run()
    self.assertEqual([(r.checkpoint, r.step) for r in results], [(path, 20)])
    self.assertEqual([s for s, _ in self._scalars()["Loss"]], [20])

  def test_once_without_checkpoint_is_an_error(self):
    with self.assertRaisesRegex(checkpoint_evaluator.EvaluationError,
                                f"No checkpoint in {self.train_dir}"):
      evaluation_loop.run_evaluation_loop(self.train_dir, self.eval_dir, self.pattern,
                                          options=evaluation_loop.LoopOptions(once=True))

  def test_stop_while_waiting_and_during_an_evaluation(self):
    stop = threading.Event()
    loop = self._loop(stop_event=stop)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    self.logs.wait_for("does not exist yet; waiting")
    stop.set()
    thread.join(timeout=5)
    self.assertFalse(thread.is_alive())

    self._save(10, seed=1)
    stop = threading.Event()
    restore = self.evaluator.restore

    def restore_then_stop(ref):
      step = restore(ref)
      stop.set()  # e.g. SIGTERM arrives while the model is evaluated
      return step

    with mock.patch.object(self.evaluator, "restore", restore_then_stop):
      self.assertEqual(self._loop(stop_event=stop).run(), [])
    self.assertIn("abandoned it, nothing written for it", self.logs.text())
    self.assertEqual(self._scalars(), {})
    self.assertEqual(evaluation_loop.read_state(self.eval_dir), {})

  def test_checkpoint_of_another_model_stops_the_loop(self):
    wrong = tf.train.Checkpoint(step=tf.Variable(10, dtype=tf.int64),
                                model=tf.train.Checkpoint(other=tf.Variable(1.0)))
    tf.train.CheckpointManager(wrong, self.train_dir, 5, checkpoint_name="ckpt").save(10)
    with self.assertRaisesRegex(checkpoint_evaluator.CheckpointMismatchError,
                                "ckpt-10: its variables do not match"):
      self._loop(max_wait_secs=0.3).run()

  def test_checkpoint_listing(self):
    self.assertEqual(evaluation_loop.list_checkpoints(self.train_dir), [])
    for step in (30, 100, 7):
      self._save(step, seed=step)
    self.assertEqual(evaluation_loop.list_checkpoints(self.train_dir),
                     [checkpoint_evaluator.CheckpointRef(
                         os.path.join(self.train_dir, f"ckpt-{s}"), s) for s in (7, 30, 100)])
    self.assertEqual(evaluation_loop.checkpoint_step("a/b/ckpt-123"), 123)
    self.assertIsNone(evaluation_loop.checkpoint_step("a/b/model"))


if __name__ == "__main__":
  tf.test.main()
