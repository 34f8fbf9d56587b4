"""One trainer per train_dir: a lease file that a second trainer refuses to run beside.

Two trainers on one train_dir (a job restarted while the old one still runs) would write the
same checkpoint names over each other. The trainer (the chief, under MultiWorkerMirroredStrategy)
holds `train_dir/trainer.lease` while it runs: JSON with its host, pid, a random token, when it
started and a heartbeat that a thread renews every HEARTBEAT_SECONDS. It is written atomically
with tf.io.gfile, so it works on object stores (gs://) as on local disks.

A trainer that finds the lease of another refuses, naming the holder, unless the lease is stale:
no heartbeat for STALE_SECONDS (the holder died without releasing it), or a holder on this host
whose process is gone (a killed run restarted at once). A stale lease is taken over with a log
line. A holder that finds its lease taken (it stalled for longer than STALE_SECONDS, and
another trainer took over) stops before its next checkpoint rather than write over the other's.
"""

import json
import os
import socket
import threading
import time
import uuid
from typing import Any, Dict, Optional

from absl import logging
import tensorflow as tf

from im2txt import file_io

LEASE_FILENAME = "trainer.lease"
HEARTBEAT_SECONDS = 30.0
# No heartbeat for this long: the holder is taken to be dead.
STALE_SECONDS = 300.0
# After writing its lease a trainer reads it back after this long, so that of two trainers
# starting at the same moment (an object store has no atomic create) only the last writer runs.
SETTLE_SECONDS = 0.25


class LeaseError(ValueError):
  """The train_dir is held by another trainer, or this trainer lost its lease."""


def _read(path: str) -> Optional[Dict[str, Any]]:
  """The lease at `path`; None if there is none; {} if its contents are not a lease (stale).
  A storage error (e.g. a transient one of an object store) is raised."""
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      text = f.read()
  except tf.errors.NotFoundError:
    return None
  try:
    lease = json.loads(text)
  except ValueError:
    return {}  # Cut short or garbled: nothing in it can be trusted to be alive.
  return lease if isinstance(lease, dict) else {}


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except (PermissionError, OSError):
    return True  # Exists (another user's), or unknowable: assume alive.
  return True


def _describe(lease: Dict[str, Any], now: float) -> str:
  heartbeat = lease.get("heartbeat")
  age = f"{now - heartbeat:.0f} s ago" if isinstance(heartbeat, (int, float)) else "never"
  return (f"the trainer on host {lease.get('host', '?')}, pid {lease.get('pid', '?')} (started "
          f"{lease.get('started_utc', '?')}, last heartbeat {age})")


def stale_reason(lease: Dict[str, Any], now: float, host: str) -> Optional[str]:
  """Why `lease` no longer holds its train_dir, or None if its holder looks alive."""
  heartbeat = lease.get("heartbeat")
  if not isinstance(heartbeat, (int, float)):
    return "the lease file is unreadable"
  if now - heartbeat > STALE_SECONDS:
    return f"no heartbeat for {now - heartbeat:.0f} s (more than {STALE_SECONDS:.0f} s)"
  pid = lease.get("pid")
  if lease.get("host") == host and isinstance(pid, int) and (
      pid == os.getpid() or not _process_alive(pid)):
    return ("it is this process's own" if pid == os.getpid()
            else f"its process {pid} on this host is gone")
  return None


class Lease:
  """The held lease of one train_dir; `acquire` takes it, `release` gives it back."""

  def __init__(self, train_dir: str):
    self.path = os.path.join(train_dir, LEASE_FILENAME)
    self.host = socket.gethostname()
    self.token = uuid.uuid4().hex
    self.started = time.time()
    self.lost = threading.Event()
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  def _contents(self) -> Dict[str, Any]:
    return {"host": self.host, "pid": os.getpid(), "token": self.token,
            "started_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started)),
            "heartbeat": time.time()}

  def _write(self) -> None:
    file_io.write_json(self.path, self._contents())

  def acquire(self) -> "Lease":
    """Takes the lease or raises LeaseError naming its holder; starts the heartbeat."""
    now = time.time()
    try:
      held = _read(self.path)
    except tf.errors.OpError as e:
      raise LeaseError(f"Cannot read the train_dir's lease {self.path}: "
                       f"{file_io.tf_message(e)}") from e
    if held is not None:
      reason = stale_reason(held, now, self.host)
      if reason is None:
        raise LeaseError(
            f"{os.path.dirname(self.path)} is in use by {_describe(held, now)}: two trainers "
            f"would write the same checkpoints over each other. Stop that trainer first (its "
            f"lease, {self.path}, is released when it ends, and taken over once it has had no "
            f"heartbeat for {STALE_SECONDS:.0f} s), or train into another --train_dir.")
      if reason != "it is this process's own":
        logging.warning("Taking over the stale lease of %s on %s: %s", _describe(held, now),
                        os.path.dirname(self.path), reason)
    try:
      self._write()
      time.sleep(SETTLE_SECONDS)
      self._check_still_ours()
    except tf.errors.OpError as e:
      raise LeaseError(f"Cannot write the train_dir's lease {self.path}: "
                       f"{file_io.tf_message(e)}") from e
    self._thread = threading.Thread(target=self._heartbeat, name="train_dir-lease", daemon=True)
    self._thread.start()
    return self

  def _check_still_ours(self) -> None:
    held = _read(self.path)
    if not held or held.get("token") != self.token:
      self.lost.set()
      raise LeaseError(
          f"{os.path.dirname(self.path)} was taken by "
          f"{_describe(held or {}, time.time())} while this trainer held it: stopped without "
          "saving so as not to write over its checkpoints.")

  def _heartbeat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        self._check_still_ours()
        self._write()
      except LeaseError:
        return
      except (tf.errors.OpError, OSError) as e:  # A transient storage error: try again later.
        logging.warning("Could not renew the lease %s: %s", self.path, e)

  def check(self) -> None:
    """Raises LeaseError if another trainer took the lease: read now (a process paused for
    longer than STALE_SECONDS must not save before its heartbeat notices)."""
    try:
      self._check_still_ours()
    except tf.errors.OpError as e:  # Cannot tell now: the heartbeat keeps checking.
      logging.warning("Could not read the lease %s before a save: %s", self.path, e.message)

  def release(self) -> None:
    """Stops the heartbeat and removes the lease file if it is still this trainer's."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    try:
      held = _read(self.path)
      if held and held.get("token") == self.token:
        tf.io.gfile.remove(self.path)
    except tf.errors.OpError as e:  # Then it goes stale and is taken over.
      logging.warning("Could not remove the lease %s: %s", self.path, e)
