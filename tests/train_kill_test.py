"""im2txt.train killed with SIGKILL resumes from its last checkpoint; SIGTERM stops it cleanly;
a second trainer on the same train_dir refuses to run beside the first (its lease).

With fused steps (--steps_per_loop=3): log lines, checkpoints (every 6 steps) and the stop come
between loops, so the steps they name follow the loop rule exactly (_loop_ends).
"""

import json
import os
import re
import signal
import socket

import tensorflow as tf

from tests import training_testdata as td

CAPTIONS = {0: [3, 4, 5], 1: [6, 7], 2: [8, 9, 10, 11], 3: [12, 5]}
TIMEOUT_SECS = 400


def _checkpoint_step(train_dir: str) -> int:
  latest = tf.train.latest_checkpoint(train_dir)
  return int(latest.rsplit("-", 1)[1]) if latest else 0


def _loop_ends(start: int, steps_per_loop: int, save_steps: int, count: int) -> list:
  """The global steps at which a run from `start` ends its first `count` loops: one step first,
  then steps_per_loop, cut at multiples of save_steps."""
  ends, step = [], start
  while len(ends) < count:
    n = 1 if step == start else min(steps_per_loop, save_steps - step % save_steps)
    step += n
    ends.append(step)
  return ends


class KillTest(tf.test.TestCase):

  def _wait_for(self, predicate, process, log_path, what):
    td.wait_for(self, predicate, process, log_path, what, TIMEOUT_SECS)

  def test_sigkill_then_restart_then_sigterm(self):
    tmp = self.create_tempdir().full_path
    pattern = td.write_shards(os.path.join(tmp, "data"), td.colour_examples(CAPTIONS), 2)
    config_file = td.write_config_file(td.tiny_config(save_checkpoint_steps=6),
                                       os.path.join(tmp, "config"))
    train_dir = os.path.join(tmp, "train")
    args = [f"--input_file_pattern={pattern}", f"--train_dir={train_dir}",
            f"--config_file={config_file}", "--number_of_steps=100000", "--seed=5",
            "--steps_per_loop=3"]

    # 1. Killed without warning once it has saved step 6 or later.
    log1 = os.path.join(tmp, "run1.log")
    run1 = td.start_train_process(args, log1)
    self._wait_for(lambda: _checkpoint_step(train_dir) >= 6, run1, log1, "checkpoint 6")
    run1.send_signal(signal.SIGKILL)
    run1.wait()
    killed_at = _checkpoint_step(train_dir)
    self.assertEqual(killed_at % 6, 0)
    logged_steps = [int(s) for s in re.findall(r"step (\d+): loss", td.read_log(log1))]
    self.assertEqual(logged_steps, _loop_ends(0, 3, 6, len(logged_steps)))
    self.assertGreaterEqual(max(logged_steps), killed_at)
    # Killed, it could not release its lease.
    lease_file = os.path.join(train_dir, "trainer.lease")
    with open(lease_file) as f:
      self.assertEqual((json.load(f)["pid"]), run1.pid)

    # 2. The same command resumes from that checkpoint; SIGTERM then saves and stops it.
    log2 = os.path.join(tmp, "run2.log")
    run2 = td.start_train_process(args, log2)
    self._wait_for(lambda: f"step {killed_at + 4}: loss" in td.read_log(log2), run2, log2,
                   f"step {killed_at + 4}")
    # It took the dead trainer's lease over at once (same host, process gone).
    self.assertIn(f"Taking over the stale lease of the trainer on host {socket.gethostname()}, "
                  f"pid {run1.pid}", td.read_log(log2))
    self.assertIn(f"its process {run1.pid} on this host is gone", td.read_log(log2))

    # 3. The same command again while run2 trains: refused, naming run2; nothing written.
    log3 = os.path.join(tmp, "run3.log")
    run3 = td.start_train_process(args, log3)
    self.assertEqual(run3.wait(timeout=TIMEOUT_SECS), 2, td.read_log(log3)[-5000:])
    self.assertIn(f"Error: {train_dir} is in use by the trainer on host {socket.gethostname()}, "
                  f"pid {run2.pid} (started ", td.read_log(log3))
    self.assertNotIn("Traceback", td.read_log(log3))
    self.assertIsNone(run2.poll(), "run2 stopped")

    run2.send_signal(signal.SIGTERM)
    self.assertEqual(run2.wait(timeout=TIMEOUT_SECS), 0, td.read_log(log2)[-5000:])
    log = td.read_log(log2)
    self.assertIn(f"ckpt-{killed_at}: global step {killed_at}", log)
    self.assertIn("SIGTERM: saving a checkpoint and stopping.", log)
    steps = [int(s) for s in re.findall(r"step (\d+): loss", log)]
    self.assertEqual(steps, _loop_ends(killed_at, 3, 6, len(steps)))
    self.assertEqual(_checkpoint_step(train_dir), steps[-1])
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(train_dir))
    self.assertEqual(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"), steps[-1])
    self.assertFalse(os.path.exists(lease_file), "the lease was not released")


if __name__ == "__main__":
  tf.test.main()
