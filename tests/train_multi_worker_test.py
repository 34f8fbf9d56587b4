"""Two MultiWorkerMirroredStrategy workers on localhost train a few steps of im2txt.train."""

import json
import os
import socket
import subprocess
import time

import tensorflow as tf

from im2txt.training import lease
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


def _data(tmp: str):
  """(pattern of two shards, one per worker; a tiny config file of global batch 4)."""
  pattern = td.write_shards(os.path.join(tmp, "data"), td.colour_examples(CAPTIONS), 2)
  return pattern, td.write_config_file(td.tiny_config(batch_size=4), os.path.join(tmp, "config"))


class MultiWorkerTest(tf.test.TestCase):

  def _start_workers(self, tmp: str, name: str, args):
    """Starts im2txt.train ARGS on two localhost workers: (processes, their logs' paths)."""
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    processes, logs = [], []
    for index in range(2):
      tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
      logs.append(os.path.join(tmp, f"{name}_worker{index}.log"))
      processes.append(td.start_train_process(
          args, logs[-1], env={"TF_CONFIG": json.dumps(tf_config)}))
    return processes, logs

  def _wait(self, processes, timeout: float = TIMEOUT_SECS):
    """Waits for `processes`, killing those still running after `timeout` seconds."""
    deadline = time.time() + timeout
    try:
      for process in processes:
        process.wait(timeout=max(1, deadline - time.time()))
    finally:
      for process in processes:
        if process.poll() is None:
          process.kill()

  def _run_workers(self, tmp: str, name: str, args):
    """Runs im2txt.train ARGS on two localhost workers; returns their logs' paths."""
    processes, logs = self._start_workers(tmp, name, args)
    self._wait(processes)
    for index, process in enumerate(processes):
      log = td.read_log(logs[index])
      self.assertEqual(process.returncode, 0, f"worker {index}:\n{log[-5000:]}")
      self.assertIn("on 2 replica(s), global batch 4", log)
    return logs

  def test_two_workers_train_and_the_chief_saves(self):
    tmp = self.create_tempdir().full_path
    pattern, config_file = _data(tmp)
    data = os.path.dirname(pattern)
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

  def test_a_held_train_dir_stops_every_worker_naming_the_cause(self):
    tmp = self.create_tempdir().full_path
    pattern, config_file = _data(tmp)
    train_dir = os.path.join(tmp, "train")
    os.makedirs(train_dir)
    # Another trainer, alive on this host, holds train_dir.
    holder = subprocess.Popen(["sleep", "600"])
    self.addCleanup(holder.kill)
    lease_file = os.path.join(train_dir, lease.LEASE_FILENAME)
    with open(lease_file, "w") as f:
      json.dump({"host": socket.gethostname(), "pid": holder.pid, "token": "other",
                 "started_utc": "2026-12-06 10:00:00 UTC", "heartbeat": time.time()}, f)
    processes, logs = self._start_workers(tmp, "held", [
        f"--input_file_pattern={pattern}", f"--train_dir={train_dir}",
        f"--config_file={config_file}", "--strategy=multi_worker", "--number_of_steps=4"])
    # Both stop at once (worker 1 no longer waits on a chief that is gone, or fails on it
    # with gRPC's "failed to connect to all addresses"), each saying why.
    self._wait(processes, timeout=120)
    chief, worker = (td.read_log(path) for path in logs)
    self.assertEqual([p.returncode for p in processes], [2, 2], chief[-3000:] + worker[-3000:])
    self.assertIn(f"Error: {train_dir} is in use by the trainer on host {socket.gethostname()}, "
                  f"pid {holder.pid}", chief)
    self.assertIn(f"Error: The chief could not start training in {train_dir} (its log names "
                  "why, e.g. another trainer holding it), so worker 1 stops too.", worker)
    for log in (chief, worker):
      self.assertNotIn("Traceback", log)
    self.assertEqual(os.listdir(train_dir), [lease.LEASE_FILENAME])  # Nothing else written.

  def test_a_lost_worker_stops_the_other_naming_the_cause(self):
    tmp = self.create_tempdir().full_path
    pattern, config_file = _data(tmp)
    for victim in (0, 1):  # The chief, then the other worker, killed while they train.
      train_dir = os.path.join(tmp, f"train{victim}")
      processes, logs = self._start_workers(tmp, f"lost{victim}", [
          f"--input_file_pattern={pattern}", f"--train_dir={train_dir}",
          f"--config_file={config_file}", "--strategy=multi_worker",
          "--number_of_steps=1000000"])
      td.wait_for(self, lambda: "step 3: loss = " in td.read_log(logs[victim]),
                  processes[victim], logs[victim], "step 3", TIMEOUT_SECS)
      processes[victim].kill()
      survivor = 1 - victim
      self._wait(processes, timeout=120)
      log = td.read_log(logs[survivor])
      self.assertEqual(processes[survivor].returncode, 2, log[-3000:])
      self.assertRegex(log, f"Error: Worker {survivor} lost contact with the other workers of "
                       r"the cluster: .* restart them all, and training resumes from the last "
                       r"checkpoint\. TensorFlow: Collective ops is aborted by: \S")
      self.assertNotIn("Traceback", log)
      if survivor == 0:  # The chief gave train_dir's lease back.
        self.assertFalse(os.path.exists(os.path.join(train_dir, lease.LEASE_FILENAME)))


if __name__ == "__main__":
  tf.test.main()
