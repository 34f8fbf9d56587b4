"""Two MultiWorkerMirroredStrategy workers on localhost train a few steps of im2txt.train."""

import json
import os
import socket
import time

import tensorflow as tf

from tests import training_testdata as td

CAPTIONS = {0: [3, 4, 5], 1: [6, 7], 2: [8, 9, 10, 11], 3: [12, 5], 4: [13, 14], 5: [6]}
TIMEOUT_SECS = 600


def _free_ports(n: int):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


class MultiWorkerTest(tf.test.TestCase):

  def _run_workers(self, tmp: str, name: str, args):
    """Runs im2txt.train ARGS on two localhost workers; returns their logs' paths."""
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    processes, logs = [], []
    for index in range(2):
      tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
      logs.append(os.path.join(tmp, f"{name}_worker{index}.log"))
      processes.append(td.start_train_process(
          args, logs[-1], env={"TF_CONFIG": json.dumps(tf_config)}))
    deadline = time.time() + TIMEOUT_SECS
    try:
      for process in processes:
        process.wait(timeout=max(1, deadline - time.time()))
    finally:
      for process in processes:
        if process.poll() is None:
          process.kill()
    for index, process in enumerate(processes):
      with open(logs[index]) as f:
        log = f.read()
      self.assertEqual(process.returncode, 0, f"worker {index}:\n{log[-5000:]}")
      self.assertIn("on 2 replica(s), global batch 4", log)
    return logs

  def test_two_workers_train_and_the_chief_saves(self):
    tmp = self.create_tempdir().full_path
    # Two shards: each worker reads its own.
    data = os.path.join(tmp, "data")
    pattern = td.write_shards(data, td.colour_examples(CAPTIONS), 2)
    config_file = td.write_config_file(td.tiny_config(batch_size=4),
                                       os.path.join(tmp, "config"))
    train_dir = os.path.join(tmp, "train")
    logs = self._run_workers(tmp, "phase1", [
        f"--input_file_pattern={pattern}", f"--train_dir={train_dir}",
        f"--config_file={config_file}", "--strategy=multi_worker", "--number_of_steps=4",
        "--seed=1", "--steps_per_loop=2"])
    for path in logs:
      with open(path) as f:
        self.assertIn("step 4: loss = ", f.read())
    # The chief's checkpoint is in train_dir; the other worker's copy went to a temporary dir.
    self.assertEqual(tf.train.latest_checkpoint(train_dir), os.path.join(train_dir, "ckpt-4"))
    reader = tf.train.load_checkpoint(os.path.join(train_dir, "ckpt-4"))
    self.assertEqual(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"), 4)
    self.assertTrue(os.path.exists(os.path.join(train_dir, "config.json")))
    # Both workers logged the same (global) losses, after loops of 1, 2 (fused) and 1 steps.
    losses = []
    for path in logs:
      with open(path) as f:
        losses.append([line.split("loss = ")[1].split()[0] for line in f
                       if "loss = " in line])
    self.assertLen(losses[0], 3)
    self.assertEqual(losses[0], losses[1])

    # Phase 3 on the same two workers, fused steps too: the same rewards and losses on both.
    td.write_scst_files(data, {i: [c, c[:1]] for i, c in CAPTIONS.items()})
    logs = self._run_workers(tmp, "scst", [
        f"--input_file_pattern={pattern}", f"--train_dir={train_dir}", "--objective=scst",
        "--strategy=multi_worker", "--number_of_steps=8", "--seed=1", "--steps_per_loop=2",
        "--scst_samples=3"])
    self.assertEqual(tf.train.latest_checkpoint(train_dir), os.path.join(train_dir, "ckpt-8"))
    lines = []
    for path in logs:
      with open(path) as f:
        lines.append([line.split("step ", 1)[1].split(" steps/s")[0].rsplit("(", 1)[0]
                      for line in f if "reward " in line and "loss = " in line])
    self.assertLen(lines[0], 3, lines)  # Loops of 1, 2 (fused) and 1 steps: 5, 7, 8.
    self.assertEqual(lines[0], lines[1])


if __name__ == "__main__":
  tf.test.main()
