"""Where training runs: the distribution strategy and its devices and, in a cluster
(MultiWorkerMirroredStrategy, TF_CONFIG), each task's role and what the tasks agree on.

A cluster stops as a whole. A task that cannot start (the chief refused by train_dir's lease)
or that dies leaves the others stuck in a collective op until gRPC fails it; each task then says
why in a line of its own instead of a gRPC traceback: the chief's lease result is all-reduced
before anything else runs (take_lease), and a lost peer becomes WorkerLostError (lost_contact).
//tests:train_multi_worker_test kills each task in turn.
"""

import dataclasses
import re
from typing import Callable, Optional, Sequence

from absl import logging
import tensorflow as tf

from im2txt import file_io
from im2txt.training import lease

STRATEGIES = ("mirrored", "multi_worker", "default")
# What TensorFlow 2.15's collective ops say when a peer task is gone (killed, or never came):
# "Collective ops is aborted by: Socket closed ... remote target /job:worker/replica:0/task:0".
_PEER_FAILURE = re.compile(r"Collective ops is aborted|/job:\w+/")


@dataclasses.dataclass(frozen=True)
class Task:
  """This process's place in the cluster; a single machine is the chief of one."""
  is_chief: bool
  task_id: int
  num_workers: int  # The chief and the workers.
  name: str  # For messages: "worker 1", "the chief".


def task(strategy: tf.distribute.Strategy) -> Task:
  resolver = strategy.cluster_resolver
  if resolver is None or resolver.task_type is None:
    return Task(True, 0, 1, "the chief")
  jobs = resolver.cluster_spec().jobs
  is_chief = resolver.task_type == "chief" or (
      resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in jobs)
  num_workers = sum(resolver.cluster_spec().num_tasks(j) for j in jobs if j in ("chief", "worker"))
  name = "the chief" if resolver.task_type == "chief" else (
      f"{resolver.task_type} {resolver.task_id}")
  return Task(is_chief, resolver.task_id, num_workers, name)


def make_strategy(name: str, devices: Optional[Sequence[str]] = None) -> tf.distribute.Strategy:
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(devices=devices)
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "default":
    return tf.distribute.get_strategy()
  raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}")


def check_accelerators(strategy, require_accelerator: bool) -> None:
  """Logs the devices training runs on; without a GPU or TPU, warns with the likely cause (or,
  with `require_accelerator`, raises ValueError saying so)."""
  accelerators = tf.config.list_logical_devices("GPU") + tf.config.list_logical_devices("TPU")
  try:
    devices = list(strategy.extended.worker_devices)
  except RuntimeError:  # The default strategy: TensorFlow's default device.
    devices = [(accelerators or tf.config.list_logical_devices("CPU"))[0].name]
  logging.info("Training on %s (TensorFlow sees %s)", ", ".join(devices),
               ", ".join(f"{d.name} ({d.device_type})" for d in accelerators) or "no GPU or TPU")
  if accelerators:
    return
  cause = ("TensorFlow sees no GPU or TPU, so training runs on the CPU. If this machine has a "
           "GPU, TensorFlow could not load CUDA: install the project with its CUDA wheels (pip "
           "install '.[gpu]', i.e. tensorflow[and-cuda]) and check that nvidia-smi sees the GPU. "
           "Measured on 2 Xeon cores: InceptionV3 at 299x299 trains at 6.8 images/s with "
           "Inception fine-tuned, and at 1.3 steps/s of batch 8 frozen; a GPU trains hundreds "
           "of images/s")
  if require_accelerator:
    raise ValueError(f"--require_accelerator: {cause}")
  logging.warning("%s.", cause)


def take_lease(strategy, train_dir: str,
               prepare: Optional[Callable[[], None]] = None) -> Optional[lease.Lease]:
  """The chief takes train_dir's lease (lease.py), runs `prepare` holding it (e.g. setting the
  checkpoint to resume from) and returns the lease; other tasks return None. In a cluster every
  task learns first whether the chief succeeded, and if not each stops with an error saying so
  (the chief's names the cause: the lease's holder, ...)."""
  this = task(strategy)
  held = refused = None
  if this.is_chief:
    try:
      held = lease.Lease(train_dir).acquire()
      if prepare is not None:
        prepare()
    except Exception as e:  # pylint: disable=broad-except  (told to the others, then raised)
      refused = e
  try:
    if this.num_workers > 1 and _any_refused(strategy, refused is not None) and not this.is_chief:
      raise lease.LeaseError(
          f"The chief could not start training in {train_dir} (its log names why, e.g. another "
          f"trainer holding it), so {this.name} stops too.")
    if refused is not None:
      raise refused
  except BaseException:
    if held is not None:
      held.release()
    raise
  return held


def _any_refused(strategy, refused: bool) -> bool:
  """Whether any task of the cluster refused to start (one all-reduce over it)."""

  @tf.function
  def count(value):
    return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(value,)),
                           axis=None)

  # Each replica of a refusing task adds one.
  return float(count(tf.constant(float(refused))).numpy()) > 0


class WorkerLostError(ValueError):
  """A task of a MultiWorkerMirroredStrategy cluster lost contact with the others."""


def lost_contact(strategy, error: tf.errors.UnavailableError) -> Optional[WorkerLostError]:
  """WorkerLostError for `error` when it says a peer task is gone; None otherwise (one machine,
  or another unavailable service, such as a storage error)."""
  this = task(strategy)
  if this.num_workers < 2 or not _PEER_FAILURE.search(error.message or ""):
    return None
  return WorkerLostError(
      f"{this.name[0].upper()}{this.name[1:]} lost contact with the other workers of the "
      "cluster: one of them stopped (its own log says why) or cannot be reached at its "
      "TF_CONFIG address. A MultiWorkerMirroredStrategy job stops when any worker does; restart "
      "them all, and training resumes from the last checkpoint. TensorFlow: "
      f"{file_io.tf_message(error)}")
