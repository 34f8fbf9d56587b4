r"""Benchmark of the Beam data job against a single-process loop doing the same work.

For each dataset size it generates a sample dataset (make_sample_dataset), then
  job:  runs build_mscoco_data in a subprocess (DirectRunner, multi-processing on all cores by
        default) and samples the resident memory of its whole process tree (driver + workers);
  loop: in this process, the same metadata stage and then, shard after shard, the same
        read + decode-check + serialize + write (shard_writer.write_shard), without Beam.
It prints images/s of both, their ratio (the job's parallel efficiency on this machine, Beam's
overhead included), the CPU time of both (load-independent: the machine may be shared) and the
job's peak memory (PSS of driver + workers) at each size: it should not grow with the number of
images. The loop's output must be byte-identical to the job's (checked).

  bazel run //bench:bench_build_mscoco_data -- --sizes=2000,4000
  python -m bench.bench_build_mscoco_data --sizes=300,600 --image_size=32   # quick
"""

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from beam_jobs import caption_metadata
from beam_jobs import make_sample_dataset
from beam_jobs import shard_writer
from beam_jobs.build_report import Tally
from im2txt import vocabulary

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _memory_bytes(pid):
  """Proportional set size of a process (shared pages split between their users, so a tree's
  sum counts them once, even right after a fork); resident size where PSS is unavailable."""
  try:
    with open(f"/proc/{pid}/smaps_rollup") as f:
      for line in f:
        if line.startswith("Pss:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    with open(f"/proc/{pid}/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except (OSError, IndexError, ValueError):
    return 0


def _tree_memory_bytes(pid):
  """Memory of `pid` and all its descendants (Linux /proc): (total, largest process)."""
  children = {}
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
      continue
    children.setdefault(ppid, []).append(int(entry))
  total, largest, stack = 0, 0, [pid]
  while stack:
    p = stack.pop()
    memory = _memory_bytes(p)
    total += memory
    largest = max(largest, memory)
    stack.extend(children.get(p, []))
  return total, largest


def _cpu_seconds(who):
  usage = resource.getrusage(who)
  return usage.ru_utime + usage.ru_stime


def run_job(flags, workers, running_mode):
  """Runs the job in a subprocess; returns (records, job seconds from its summary, CPU seconds of
  all its processes, peak memory of its process tree, peak of its largest process)."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([_ROOT] + [p for p in env.get("PYTHONPATH", "").split(
      os.pathsep) if p])
  command = [sys.executable, "-m", "beam_jobs.build_mscoco_data"] + flags + [
      "--runner=DirectRunner", f"--direct_running_mode={running_mode}",
      f"--direct_num_workers={workers}"]
  process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  peaks = [0, 0]

  def sample():
    while process.poll() is None:
      total, largest = _tree_memory_bytes(process.pid)
      peaks[0], peaks[1] = max(peaks[0], total), max(peaks[1], largest)
      time.sleep(0.05)

  cpu_before = _cpu_seconds(resource.RUSAGE_CHILDREN)
  sampler = threading.Thread(target=sample)
  sampler.start()
  stdout, stderr = process.communicate()
  sampler.join()
  cpu = _cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_before
  if process.returncode != 0:
    raise RuntimeError(f"job failed ({process.returncode}):\n{stderr[-3000:]}")
  match = re.search(r"(\d+) records written in ([\d.]+) s", stdout)
  return int(match.group(1)), float(match.group(2)), cpu, peaks[0], peaks[1]


def run_loop(dataset, output_dir, num_shards):
  """The same work in one process, no Beam: metadata, then every shard with write_shard.
  Returns (records, seconds, CPU seconds)."""
  start, cpu_start = time.time(), _cpu_seconds(resource.RUSAGE_SELF)
  tally = Tally()
  train = caption_metadata.tokenize_images(caption_metadata.load_coco_captions(
      dataset.train_captions_file, dataset.train_image_dir, tally), 100, tally)
  val = caption_metadata.tokenize_images(caption_metadata.load_coco_captions(
      dataset.val_captions_file, dataset.val_image_dir, tally), 100, tally)
  splits = caption_metadata.split_coco(train, val)
  vocab_file = os.path.join(output_dir, "word_counts.txt")
  vocabulary.write_word_counts(vocab_file, caption_metadata.word_counts(splits["train"], 4))
  vocab = vocabulary.Vocabulary.from_file(vocab_file)
  records = 0
  for split, shards in num_shards.items():
    for spec in caption_metadata.plan_shards(split, splits[split], shards):
      result = shard_writer.write_shard(spec, output_dir, output_dir, vocab, tally)
      records += result.records_written
  return records, time.time() - start, _cpu_seconds(resource.RUSAGE_SELF) - cpu_start


def _same_files(dir_a, dir_b):
  names = sorted(n for n in os.listdir(dir_a) if "-of-" in n or n == "word_counts.txt")
  if names != sorted(n for n in os.listdir(dir_b) if "-of-" in n or n == "word_counts.txt"):
    return False
  for name in names:
    with open(os.path.join(dir_a, name), "rb") as a, open(os.path.join(dir_b, name), "rb") as b:
      if a.read() != b.read():
        return False
  return True


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="2000,4000", help="Comma-separated numbers of images.")
  parser.add_argument("--image_size", type=int, default=64, help="Generated image side, pixels.")
  parser.add_argument("--workers", type=int, default=0, help="--direct_num_workers (0: cores).")
  parser.add_argument("--running_mode", default="multi_processing",
                      help="--direct_running_mode of the job.")
  parser.add_argument("--train_shards", type=int, default=16, help="Train shards of both runs.")
  parser.add_argument("--work_dir", default="", help="Scratch directory (default: a temp dir).")
  args = parser.parse_args(argv)
  work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_build_mscoco_data_")
  num_shards = {"train": args.train_shards, "val": 2, "test": 2}
  rows = []
  try:
    for size in [int(s) for s in args.sizes.split(",")]:
      root = os.path.join(work_dir, str(size))
      num_val = max(1, size // 5)
      dataset = make_sample_dataset.make_sample_dataset(
          os.path.join(root, "data"), num_train_images=size - num_val, num_val_images=num_val,
          image_size=args.image_size)
      job_out = os.path.join(root, "job")
      flags = dataset.build_args() + [f"--output_dir={job_out}"] + [
          f"--{split}_shards={n}" for split, n in num_shards.items()]
      records, job_seconds, job_cpu, tree_peak, largest_peak = run_job(flags, args.workers,
                                                                       args.running_mode)
      loop_out = os.path.join(root, "loop")
      os.makedirs(loop_out)
      loop_records, loop_seconds, loop_cpu = run_loop(dataset, loop_out, num_shards)
      identical = _same_files(job_out, loop_out) and loop_records == records
      rows.append((size, records, job_seconds, loop_seconds, tree_peak, largest_peak, job_cpu,
                   loop_cpu, identical))
      shutil.rmtree(root)
  finally:
    if not args.work_dir:
      shutil.rmtree(work_dir, ignore_errors=True)

  mb = 1 << 20
  print(f"build_mscoco_data benchmark: {args.image_size}x{args.image_size} JPEGs, 5 captions "
        f"each, {os.cpu_count()} cores, job = DirectRunner {args.running_mode} "
        f"(workers={args.workers or os.cpu_count()}) incl. its startup; memory = PSS")
  print(f"{'images':>7}{'records':>9}{'job s':>8}{'job img/s':>11}{'loop s':>8}{'loop img/s':>12}"
        f"{'ratio':>7}{'job peak MB':>13}{'largest MB':>12}{'job cpu s':>11}{'loop cpu s':>12}"
        "  same bytes")
  for size, records, job_s, loop_s, tree_peak, largest_peak, job_cpu, loop_cpu, same in rows:
    print(f"{size:>7}{records:>9}{job_s:>8.1f}{size / job_s:>11.0f}{loop_s:>8.1f}"
          f"{size / loop_s:>12.0f}{loop_s / job_s:>7.2f}{tree_peak / mb:>13.0f}"
          f"{largest_peak / mb:>12.0f}{job_cpu:>11.1f}{loop_cpu:>12.1f}  {'yes' if same else 'NO'}")
  if len(rows) >= 2:
    first, last = rows[0], rows[-1]
    # The job's fixed cost (worker processes importing TensorFlow, pipeline setup) cancels out in
    # the difference between two sizes: what remains is the per-image rate at scale.
    extra = last[0] - first[0]
    job_rate = extra / max(last[2] - first[2], 1e-9)
    loop_rate = extra / max(last[3] - first[3], 1e-9)
    print(f"marginal rate {first[0]} -> {last[0]} images: job {job_rate:.0f} img/s, loop "
          f"{loop_rate:.0f} img/s, ratio {job_rate / loop_rate:.2f}; CPU per image: job "
          f"{(last[6] - first[6]) / extra * 1e3:.2f} ms, "
          f"loop {(last[7] - first[7]) / extra * 1e3:.2f} ms")
    print(f"job peak memory {first[0]} -> {last[0]} images: {first[4] / mb:.0f} -> "
          f"{last[4] / mb:.0f} MB ({(last[4] - first[4]) / mb:+.0f} MB for "
          f"{last[0] / first[0]:.1f}x the images)")
  return 0 if all(row[-1] for row in rows) else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
