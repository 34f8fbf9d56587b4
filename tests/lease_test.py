"""Tests for im2txt.training.lease: one trainer per train_dir."""

import json
import os
import socket
import subprocess
import sys
import time
from unittest import mock

import tensorflow as tf

from im2txt.training import lease
from im2txt.training import trainer
from tests import training_testdata as td


def _write_lease(train_dir, host, pid, heartbeat_age=0.0, token="theirs"):
  os.makedirs(train_dir, exist_ok=True)
  contents = {"host": host, "pid": pid, "token": token, "started_utc": "2026-12-06 08:00:00 UTC",
              "heartbeat": time.time() - heartbeat_age}
  with open(os.path.join(train_dir, lease.LEASE_FILENAME), "w") as f:
    json.dump(contents, f)
  return contents


def _read_lease(train_dir):
  with open(os.path.join(train_dir, lease.LEASE_FILENAME)) as f:
    return json.load(f)


class LeaseTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.train_dir = os.path.join(self.create_tempdir().full_path, "train")
    patcher = mock.patch.object(lease, "SETTLE_SECONDS", 0.0)
    patcher.start()
    self.addCleanup(patcher.stop)

  def test_acquire_writes_the_holder_and_release_removes_it(self):
    held = lease.Lease(self.train_dir).acquire()
    contents = _read_lease(self.train_dir)
    self.assertEqual((contents["host"], contents["pid"], contents["token"]),
                     (socket.gethostname(), os.getpid(), held.token))
    self.assertLess(abs(contents["heartbeat"] - time.time()), 5)
    held.release()
    self.assertFalse(os.path.exists(os.path.join(self.train_dir, lease.LEASE_FILENAME)))

  def test_a_live_holder_is_refused_and_named(self):
    # A live process on this host (the test runner's parent), and a fresh one elsewhere.
    for host, pid in ((socket.gethostname(), os.getppid()), ("gpu-node-7", 4242)):
      written = _write_lease(self.train_dir, host, pid, heartbeat_age=40)
      with self.assertRaises(lease.LeaseError) as raised:
        lease.Lease(self.train_dir).acquire()
      self.assertEqual(
          str(raised.exception),
          f"{self.train_dir} is in use by the trainer on host {host}, pid {pid} (started "
          f"2026-12-06 08:00:00 UTC, last heartbeat 40 s ago): two trainers would write the same "
          f"checkpoints over each other. Stop that trainer first (its lease, "
          f"{os.path.join(self.train_dir, lease.LEASE_FILENAME)}, is released when it ends, and "
          f"taken over once it has had no heartbeat for 300 s), or train into another "
          f"--train_dir.")
      self.assertEqual(_read_lease(self.train_dir), written)  # Untouched.

  def test_stale_leases_are_taken_over_with_a_log_line(self):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)
    cases = (("gpu-node-7", 4242, 301, "no heartbeat for 301 s (more than 300 s)"),
             (socket.gethostname(), dead_pid, 10, f"its process {dead_pid} on this host is gone"))
    for host, pid, age, reason in cases:
      _write_lease(self.train_dir, host, pid, heartbeat_age=age)
      with self.assertLogs(level="WARNING") as logs:
        held = lease.Lease(self.train_dir).acquire()
      self.assertEqual(len(logs.output), 1)
      self.assertIn(f"Taking over the stale lease of the trainer on host {host}, pid {pid}",
                    logs.output[0])
      self.assertTrue(logs.output[0].endswith(reason), logs.output[0])
      self.assertEqual(_read_lease(self.train_dir)["token"], held.token)
      held.release()
    # An unreadable lease (cut short) holds nothing.
    with open(os.path.join(self.train_dir, lease.LEASE_FILENAME), "w") as f:
      f.write('{"host": "gpu-no')
    with self.assertLogs(level="WARNING") as logs:
      lease.Lease(self.train_dir).acquire().release()
    self.assertTrue(logs.output[0].endswith("the lease file is unreadable"))

  def test_heartbeat_renews_and_a_taken_lease_stops_its_old_holder(self):
    with mock.patch.object(lease, "HEARTBEAT_SECONDS", 0.05):
      held = lease.Lease(self.train_dir).acquire()
      first = _read_lease(self.train_dir)["heartbeat"]
      deadline = time.time() + 30
      while _read_lease(self.train_dir)["heartbeat"] == first and time.time() < deadline:
        time.sleep(0.05)
      self.assertGreater(_read_lease(self.train_dir)["heartbeat"], first)
      held.check()  # Still ours.
      # Another trainer took it over (this one stalled past STALE_SECONDS).
      theirs = _write_lease(self.train_dir, "gpu-node-7", 4242)
      self.assertTrue(held.lost.wait(30))
      with self.assertRaisesRegex(lease.LeaseError, r"was taken by the trainer on host "
                                  r"gpu-node-7, pid 4242 .* stopped without saving"):
        held.check()
      held.release()
      self.assertEqual(_read_lease(self.train_dir), theirs)  # Not removed: not ours.


  def test_check_before_a_save_reads_the_lease_itself(self):
    # A process paused past STALE_SECONDS resumes and saves before its heartbeat runs again.
    held = lease.Lease(self.train_dir).acquire()
    theirs = _write_lease(self.train_dir, "gpu-node-7", 4242)
    self.assertFalse(held.lost.is_set())
    with self.assertRaisesRegex(lease.LeaseError, "was taken by the trainer on host gpu-node-7"):
      held.check()
    held.release()
    self.assertEqual(_read_lease(self.train_dir), theirs)


class TrainerLeaseTest(tf.test.TestCase):

  def test_trainer_refuses_a_held_train_dir_and_releases_its_own(self):
    tmp = self.create_tempdir().full_path
    pattern = td.write_shards(os.path.join(tmp, "data"), td.colour_examples({0: [3, 4]}), 1)
    train_dir = os.path.join(tmp, "train")
    options = trainer.TrainOptions(input_file_pattern=pattern, train_dir=train_dir,
                                   number_of_steps=2, seed=1)
    _write_lease(train_dir, "gpu-node-7", 4242)
    with self.assertRaisesRegex(lease.LeaseError, "is in use by the trainer on host gpu-node-7"):
      trainer.train(td.tiny_config(), options)
    self.assertEqual(os.listdir(train_dir), [lease.LEASE_FILENAME])  # Nothing else written.
    os.remove(os.path.join(train_dir, lease.LEASE_FILENAME))
    result = trainer.train(td.tiny_config(), options)
    self.assertEqual(result.global_step, 2)
    self.assertNotIn(lease.LEASE_FILENAME, os.listdir(train_dir))


if __name__ == "__main__":
  tf.test.main()
