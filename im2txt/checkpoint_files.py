"""Checkpoints that fail: a corrupt one named (which of its files is bad, and which earlier
checkpoint is intact), a trainer resumed from an earlier one (`train --resume_from`), and a save
that fails (a full disk) explained and cleaned up.

A checkpoint whose `.data-*` file was cut short (a copy or a disk that filled up) fails to restore
with TensorFlow's "Read less bytes than requested" (an IndexError) and no file name; one whose
`.index` is damaged with "not an sstable (bad magic number)". Every binary that restores a
checkpoint (train, evaluate, run_inference, export_saved_model, score_captions,
convert_checkpoint) turns such a failure into `corrupt_checkpoint_error`: the bad file, the
reason, and the newest checkpoint beside it that reads whole.

    try:
      tf.train.Checkpoint(model=model).restore(prefix)
    except checkpoint_files.READ_ERRORS as e:
      raise checkpoint_files.corrupt_checkpoint_error(prefix, e) from e
"""

import json
import os
import re
import shutil
import time
from typing import List, Optional, Sequence

from absl import logging
import tensorflow as tf

from im2txt import file_io

# What restoring or reading a damaged checkpoint raises in TensorFlow 2.15.
READ_ERRORS = (tf.errors.OpError, IndexError)
# Checkpoints looked at, newest first, for an intact one.
MAX_CHECKPOINTS_CHECKED = 10


class CorruptCheckpointError(ValueError):
  """A checkpoint that does not read whole, named with its bad file."""


def _reason(error: BaseException) -> str:
  line = file_io.tf_message(error)
  if "Read less bytes than requested" in line:
    return f"cut short ({line})"
  return line


def checkpoint_problem(prefix: str) -> Optional[str]:
  """None if every tensor of the checkpoint `prefix` reads (its index and data whole, their
  checksums right), else "FILE: reason" naming the bad file."""
  index = prefix + ".index"
  if not tf.io.gfile.exists(index):
    return f"{index}: missing"
  try:
    reader = tf.train.load_checkpoint(prefix)
  except READ_ERRORS + (ValueError,) as e:
    return f"{index}: {_reason(e)}"
  try:
    for name in sorted(reader.get_variable_to_shape_map()):
      reader.get_tensor(name)
  except READ_ERRORS + (ValueError,) as e:
    data = sorted(tf.io.gfile.glob(prefix + ".data-*"))
    return f"{', '.join(data) if data else prefix + '.data-* (missing)'}: {_reason(e)}"
  return None


def _step(prefix: str) -> int:
  found = re.search(r"-(\d+)$", prefix)
  return int(found.group(1)) if found else -1


def newest_intact_checkpoint(directory: str, exclude: str = "") -> Optional[str]:
  """The newest checkpoint prefix in `directory` (by its step number), other than `exclude`,
  that reads whole; None if none of the newest MAX_CHECKPOINTS_CHECKED does."""
  prefixes = {path[:-len(".index")] for path in tf.io.gfile.glob(
      os.path.join(directory, "*.index"))}
  prefixes.discard(exclude)
  for prefix in sorted(prefixes, key=_step, reverse=True)[:MAX_CHECKPOINTS_CHECKED]:
    if checkpoint_problem(prefix) is None:
      return prefix
  return None


def corrupt_checkpoint_error(prefix: str, error: BaseException,
                             for_trainer: bool = False) -> CorruptCheckpointError:
  """The error to report when restoring `prefix` failed with `error` (one of READ_ERRORS);
  `for_trainer`: the advice is how to resume from the intact one, not which flag names it."""
  problem = checkpoint_problem(prefix) or f"{prefix}: {_reason(error)}"
  directory = os.path.dirname(prefix)
  intact = newest_intact_checkpoint(directory, exclude=prefix)
  if intact and for_trainer:
    advice = (f"The newest intact checkpoint beside it is {intact}. To resume from it, rerun "
              f"with --resume_from={os.path.basename(intact)} (the checkpoints after it are "
              f"moved into {os.path.join(directory, SET_ASIDE_DIRNAME)}/).")
  elif intact:
    advice = (f"The newest intact checkpoint beside it is {intact}: give it by "
              f"--checkpoint_path={intact}.")
  else:
    advice = f"No other checkpoint in {os.path.dirname(prefix) or '.'} reads whole."
  return CorruptCheckpointError(f"Checkpoint {prefix} is corrupt: {problem}. {advice}")


# --- resuming from an earlier checkpoint ----------------------------------------------------

SET_ASIDE_DIRNAME = "set_aside"
RESUMES_FILENAME = "resumes.json"
# A recorded resume's "utc" time.
RESUME_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# A checkpoint's files: ckpt-<step>.index and ckpt-<step>.data-NNNNN-of-NNNNN.
_CHECKPOINT_FILE = re.compile(r"ckpt-(\d+)\.(?:index|data-\d{5}-of-\d{5})")


def _resumes_file(train_dir: str) -> str:
  return os.path.join(train_dir, SET_ASIDE_DIRNAME, RESUMES_FILENAME)


def _same_dir(a: str, b: str) -> bool:
  local = "://" not in a and "://" not in b
  return (os.path.abspath(a) == os.path.abspath(b) if local
          else a.rstrip("/") == b.rstrip("/"))


def resume_prefix(train_dir: str, given: str) -> Optional[str]:
  """The checkpoint of train_dir that --resume_from `given` ("ckpt-N" or its path) names, which
  must read whole (a ValueError naming the problem otherwise; nothing outside train_dir is
  read). None when this resume was done before and training has saved an intact later
  checkpoint since: a restarted job keeps its flags, and goes on from its own progress."""
  name = os.path.basename(given)
  given_dir = os.path.dirname(given)
  if (given_dir and not _same_dir(given_dir, train_dir)) or not re.fullmatch(r"ckpt-\d+", name):
    raise ValueError(f"--resume_from={given}: not a checkpoint of --train_dir {train_dir} (its "
                     "checkpoints are named ckpt-N, N the global step)")
  prefix = os.path.join(train_dir, name)
  record = _resumes_file(train_dir)
  latest = tf.train.latest_checkpoint(train_dir)
  if (latest and _step(latest) > _step(prefix) and checkpoint_problem(latest) is None
      and any(r.get("checkpoint") == name for r in resumes(train_dir))):
    logging.warning("--resume_from=%s was done before (%s) and training has saved checkpoints "
                    "since: it goes on from the latest, %s. To roll back to %s again, remove "
                    "its entries from %s.", name, record, latest, name, record)
    return None
  problem = checkpoint_problem(prefix)
  if problem:
    intact = newest_intact_checkpoint(train_dir, exclude=prefix)
    raise ValueError(f"--resume_from={given}: {problem}" + (
        f". The newest intact checkpoint of {train_dir} is {intact}" if intact else ""))
  return prefix


def resumes(train_dir: str) -> List[dict]:
  """The resumes (--resume_from) recorded in train_dir, oldest first, each {"checkpoint":
  "ckpt-M", "utc": ..., "moved": [...]}: none if there is no record; a ValueError naming it if it
  is not such a record."""
  path = _resumes_file(train_dir)
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  try:
    entries = json.loads(text)["resumes"]
    if isinstance(entries, list) and all(isinstance(r, dict) for r in entries):
      return entries
  except (ValueError, KeyError, TypeError):
    pass
  raise ValueError(f"{path}: not a record of resumes ({{\"resumes\": [...]}}, written by the "
                   "trainer): restore or remove it")


def make_latest(prefix: str, now: float) -> None:
  """Makes the checkpoint `prefix` (of resume_prefix) its directory's latest: the checkpoint
  state is rewritten (atomically) to end at it, the files of later checkpoints are moved into
  set_aside/<UTC time>-<its name>/ (kept, and out of the way of the steps training saves again)
  and the resume is recorded in set_aside/resumes.json. In this order a crash at any point
  leaves a train_dir that resumes from `prefix` (and a rerun finishes the moves)."""
  directory, name = os.path.dirname(prefix), os.path.basename(prefix)
  step = _step(prefix)
  state = tf.train.get_checkpoint_state(directory)
  kept = []
  if state is not None:
    stamps = list(state.all_model_checkpoint_timestamps)
    for k, path in enumerate(state.all_model_checkpoint_paths):
      if _step(path) < step:
        kept.append((os.path.basename(path), stamps[k] if len(stamps) > k else now))
  kept.append((name, now))
  tf.__internal__.train.update_checkpoint_state(
      directory, name, [path for path, _ in kept], save_relative_paths=True,
      all_model_checkpoint_timestamps=[stamp for _, stamp in kept],
      last_preserved_timestamp=state.last_preserved_timestamp if state is not None else now - 1)
  later = {}  # File name -> its checkpoint's step, for the checkpoints after `prefix`.
  for filename in sorted(tf.io.gfile.listdir(directory)):
    found = _CHECKPOINT_FILE.fullmatch(filename)
    if found and int(found.group(1)) > step:
      later[filename] = int(found.group(1))
  moved_to = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + f"-{name}"
  if later:
    aside = os.path.join(directory, SET_ASIDE_DIRNAME, moved_to)
    tf.io.gfile.makedirs(aside)
    for filename in later:
      tf.io.gfile.rename(os.path.join(directory, filename), os.path.join(aside, filename))
    logging.warning("Resuming from %s: the files of the later checkpoints (steps %s) moved to %s",
                    prefix, ", ".join(map(str, sorted(set(later.values())))), aside)
  done = resumes(directory)
  done.append({"checkpoint": name,
               "utc": time.strftime(RESUME_TIME_FORMAT, time.gmtime(now)),
               "moved": [f"{moved_to}/{filename}" for filename in later]})
  file_io.write_json(_resumes_file(directory), {"resumes": done})


# --- saving ------------------------------------------------------------------------------

# A save warns beforehand when the free space is below this many checkpoints' size.
FREE_SPACE_MARGIN = 2.0


class CheckpointSaveError(OSError):
  """A checkpoint could not be written (e.g. the disk is full); nothing of it is left."""


def _mib(size: float) -> str:
  return f"{size / 2**20:,.1f} MiB"


def free_bytes(directory: str) -> Optional[int]:
  """Free space of the local file system holding `directory`; None for a remote one (gs://)."""
  if "://" in directory:
    return None
  try:
    return shutil.disk_usage(directory).free
  except OSError:
    return None


def checkpoint_bytes(prefix: Optional[str], variables: Sequence[tf.Variable]) -> int:
  """The size of a checkpoint: the files of `prefix` (the last one written), or without one the
  bytes of `variables`."""
  if prefix:
    files = tf.io.gfile.glob(prefix + ".*")
    if files:
      return sum(tf.io.gfile.stat(path).length for path in files)
  return sum(v.shape.num_elements() * v.dtype.size for v in variables)


def save(manager: tf.train.CheckpointManager, checkpoint_number: int, needed: int,
         previous: Optional[str]) -> str:
  """manager.save(checkpoint_number), warning first when the free space looks too small for
  `needed` bytes; on a failure, a half-written checkpoint is removed and CheckpointSaveError
  says what happened (the path, the size needed, the free space, and `previous`, the last
  checkpoint written, which stays as it was). A checkpoint whose files were all written before
  the failure (e.g. in the manager's bookkeeping after them) is kept."""
  directory = manager.directory
  prefix = os.path.join(directory, f"ckpt-{checkpoint_number}")
  free = free_bytes(directory)
  if free is not None and free < FREE_SPACE_MARGIN * needed:
    logging.warning("Only %s free on %s, and a checkpoint takes about %s: the next saves may "
                    "fail", _mib(free), directory, _mib(needed))
  try:
    return manager.save(checkpoint_number=checkpoint_number)
  except (tf.errors.OpError, OSError) as e:
    # The saver writes under PREFIX_temp/ and merges into PREFIX.index and PREFIX.data-*: remove
    # whatever of them exists (never an earlier checkpoint's files), unless they are complete.
    complete = checkpoint_problem(prefix) is None
    leftovers = tf.io.gfile.glob(prefix + "_temp*")
    if not complete:
      leftovers += tf.io.gfile.glob(prefix + ".*")
    for path in leftovers:
      file_io.remove_quietly(path)
    free = free_bytes(directory)
    space = (f"{_mib(free)} are free there" if free is not None
             else "the free space there is unknown")
    # What a rerun resumes from: the checkpoint the state file names, if its files exist.
    last = tf.train.latest_checkpoint(directory) or previous
    kept = (f"The last checkpoint, {last}, is intact: free some space and rerun the same "
            "command, and training resumes from it." if last else
            "No earlier checkpoint was written: free some space and rerun the same command.")
    done = ("its files were written, the failure came after them" if complete
            else "the partial files were removed")
    raise CheckpointSaveError(
        f"Saving checkpoint {prefix} failed: {file_io.tf_message(e)}. It needs about "
        f"{_mib(needed)}, and {space}; {done}. {kept}") from e
