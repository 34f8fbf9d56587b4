"""The package as users install it (pyproject.toml), and the data job on a distributed engine.

setUpClass installs this checkout with `pip install --no-deps` into a fresh virtualenv, offline:
its dependencies are the already installed pins of the project's .venv (a .pth file points at
them), while `im2txt` and `beam_jobs` come only from the installed package. Every subprocess
runs without PYTHONPATH and outside the source tree, so nothing can import the checkout.

Then Beam's DaskRunner runs build_mscoco_data on a local dask.distributed cluster (a scheduler
and two worker processes on 127.0.0.1), whose workers import the code from the installed
package, and the shards, the vocabulary and the summary must equal DirectRunner's byte for byte;
so must extract_image_features' feature shards and counts (RunInference on the same cluster),
and caption_images' caption and failure shards and summary (the SavedModel of that model).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import unittest

from distributed import Client

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What `pip install .` needs from the checkout (Bazel: the test's runfiles).
PACKAGE_SOURCES = ["pyproject.toml", "README.md", "im2txt", "beam_jobs"]
CONSOLE_SCRIPTS = ["im2txt-make-sample-data", "im2txt-build-data", "im2txt-train",
                   "im2txt-evaluate", "im2txt-run-inference", "im2txt-export",
                   "im2txt-convert-checkpoint", "im2txt-score-captions",
                   "im2txt-extract-features", "im2txt-caption-images"]
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
SHARD_FLAGS = ["--train_shards=3", "--val_shards=2", "--test_shards=2", "--min_word_count=2"]


def _copy_sources(target):
  os.makedirs(target)
  for name in PACKAGE_SOURCES:
    source = os.path.join(REPO, name)
    if os.path.isdir(source):
      shutil.copytree(source, os.path.join(target, name),
                      ignore=shutil.ignore_patterns("__pycache__", "BUILD"))
    else:
      shutil.copyfile(source, os.path.join(target, name))


class DistributionTest(unittest.TestCase):
  maxDiff = None

  @classmethod
  def setUpClass(cls):
    cls.tmp = tempfile.mkdtemp()
    cls.work = os.path.join(cls.tmp, "work")  # The cwd of every subprocess: no source here.
    os.makedirs(cls.work)
    venv = os.path.join(cls.tmp, "venv")
    cls.bin = os.path.join(venv, "bin")
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", venv], check=True)
    venv_python = os.path.join(cls.bin, "python")
    site = subprocess.run([venv_python, "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "_installed_pins.pth"), "w") as f:
      f.write(sysconfig.get_paths()["purelib"] + "\n")
    source = os.path.join(cls.tmp, "source")
    _copy_sources(source)
    cls.env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cls.env.update(PATH=cls.bin + os.pathsep + os.environ.get("PATH", ""),
                   TF_CPP_MIN_LOG_LEVEL="2", PIP_NO_INDEX="1", PYTHONWARNINGS="ignore")
    cls._run([venv_python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
              source])

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)

  @classmethod
  def _run(cls, command, exit_code=0, timeout=600):
    result = subprocess.run(command, cwd=cls.work, env=cls.env, capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != exit_code:
      raise AssertionError(f"{command} exited {result.returncode}:\n{result.stdout}\n"
                           f"{result.stderr[-4000:]}")
    return result.stdout

  def test_console_scripts(self):
    for script in CONSOLE_SCRIPTS:
      self.assertTrue(os.access(os.path.join(self.bin, script), os.X_OK), script)
    where = self._run([os.path.join(self.bin, "python"), "-c",
                       "import im2txt.train, beam_jobs.shard_writer as s; print(s.__file__)"])
    self.assertTrue(where.startswith(os.path.join(self.tmp, "venv")), where)
    # absl's --help exits with status 1.
    help_text = self._run([os.path.join(self.bin, "im2txt-train"), "--help"], exit_code=1)
    self.assertIn("--train_dir", help_text)
    self.assertIn("--inception_checkpoint_file", help_text)
    self.assertIn("--karpathy_split_file", self._run([os.path.join(self.bin, "im2txt-build-data"),
                                                      "--help"]))
    self.assertIn("--num_views", self._run([os.path.join(self.bin, "im2txt-extract-features"),
                                            "--help"]))

  def _start_cluster(self):
    scheduler_file = os.path.join(self.tmp, "scheduler.json")
    common = dict(cwd=self.work, env=self.env, stdout=subprocess.DEVNULL,
                  stderr=open(os.path.join(self.tmp, "dask.log"), "a"))
    dask = [os.path.join(self.bin, "python"), "-m", "dask"]
    processes = [subprocess.Popen(
        dask + ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                "--scheduler-file", scheduler_file], **common)]
    for _ in range(300):
      if os.path.exists(scheduler_file):
        break
      time.sleep(0.1)
    processes.append(subprocess.Popen(
        dask + ["worker", "--scheduler-file", scheduler_file, "--nworkers", "2", "--nthreads",
                "1", "--no-dashboard", "--host", "127.0.0.1", "--local-directory",
                os.path.join(self.tmp, "dask-workers")], **common))
    for process in processes:
      self.addCleanup(process.wait, 30)
      self.addCleanup(process.terminate)
    with open(scheduler_file) as f:
      address = json.load(f)["address"]
    with Client(address, timeout=60) as client:
      client.wait_for_workers(2, timeout=120)
      self.assertEqual(len(client.scheduler_info()["workers"]), 2)
    return address

  def _build(self, output_dir, runner_flags):
    out = self._run([os.path.join(self.bin, "im2txt-build-data")] + self.data_flags
                    + [f"--output_dir={output_dir}"] + SHARD_FLAGS + runner_flags)
    summary = out[out.index("build_mscoco_data summary"):]
    # Equal but for where the output went and how long it took.
    return re.sub(r"in [\d.]+ s\n?$", "in T s", summary.replace(output_dir, "OUT"))

  def test_dask_runner_writes_what_direct_runner_writes(self):
    data = os.path.join(self.tmp, "data")
    self._run([os.path.join(self.bin, "im2txt-make-sample-data"), f"--output_dir={data}",
               "--num_train_images=24", "--num_val_images=20", "--image_size=32"])
    train_dir = os.path.join(data, "train2014")
    with open(os.path.join(train_dir, "COCO_train2014_000000000003.jpg"), "wb") as f:
      f.write(b"")  # A bad image: dropped and counted.
    with open(os.path.join(data, "captions_train2014.json")) as f:
      captions = json.load(f)
    captions["images"] += [{"id": 901, "file_name": "missing.jpg"},
                           {"id": 902, "file_name": "../val2014/COCO_val2014_000000000001.jpg"}]
    captions["annotations"] += [{"id": 9000 + i, "image_id": 901 + i % 2, "caption": "a thing"}
                                for i in range(4)]
    with open(os.path.join(data, "captions_train2014.json"), "w") as f:
      json.dump(captions, f)
    self.data_flags = [f"--train_image_dir={train_dir}",
                       f"--val_image_dir={os.path.join(data, 'val2014')}",
                       f"--train_captions_file={data}/captions_train2014.json",
                       f"--val_captions_file={data}/captions_val2014.json"]

    direct_dir = os.path.join(self.tmp, "direct")
    direct = self._build(direct_dir, ["--direct_num_workers=2"])
    address = self._start_cluster()
    dask_dir = os.path.join(self.tmp, "dask")
    on_dask = self._build(dask_dir, [f"--runner={DASK_RUNNER}",
                                     f"--dask_client_address={address}"])

    self.assertEqual(on_dask, direct)
    for line in ("zero-byte file", "listed but missing on disk", "path outside its image folder",
                 "train  "):
      self.assertIn(line, direct)
    self.assertRegex(direct, r"\n  train +\d+ +\d+ +3\n")
    names = sorted(os.listdir(direct_dir))
    self.assertEqual(names, ["concepts.txt", "test-00000-of-00002", "test-00001-of-00002",
                             "test_references.json", "train-00000-of-00003",
                             "train-00001-of-00003", "train-00002-of-00003",
                             "train_references.json", "val-00000-of-00002", "val-00001-of-00002",
                             "val_references.json", "word_counts.txt"])
    self.assertEqual(sorted(os.listdir(dask_dir)), names)
    for name in names:
      with open(os.path.join(direct_dir, name), "rb") as a, \
           open(os.path.join(dask_dir, name), "rb") as b:
        self.assertEqual(a.read(), b.read(), name)

    # The feature job (RunInference) on the same cluster writes DirectRunner's feature shards.
    init = os.path.join(self.tmp, "init")
    self._run([os.path.join(self.bin, "im2txt-train"), f"--input_file_pattern={direct_dir}/train-*",
               f"--train_dir={init}", "--preset=small", "--number_of_steps=0", "--seed=1",
               "--inception_checkpoint_file=random"])
    outputs = {}
    on_cluster = [f"--runner={DASK_RUNNER}", f"--dask_client_address={address}"]
    for runner, flags in (("direct", ["--direct_num_workers=2"]), ("dask", on_cluster)):
      output_dir = os.path.join(self.tmp, f"features_{runner}")
      out = self._run([os.path.join(self.bin, "im2txt-extract-features"),
                       f"--input_file_pattern={direct_dir}/train-*", f"--output_dir={output_dir}",
                       f"--train_dir={init}", "--num_views=1"] + flags)
      counts = re.findall(r"(?m)^  (shards written|records written|images through InceptionV3|"
                          r"skipped [^:]+): (\d+)", out)
      shards = {}
      for name in sorted(os.listdir(output_dir)):
        with open(os.path.join(output_dir, name), "rb") as f:
          shards[name] = f.read()
      outputs[runner] = counts, shards
    counts, shards = outputs["direct"]
    self.assertEqual(sorted(shards), ["concepts.txt", "image_features.json",
                                      "train-00000-of-00003", "train-00001-of-00003",
                                      "train-00002-of-00003", "train_references.json",
                                      "word_counts.txt"])
    self.assertEqual(dict(counts)["shards written"], "3")
    self.assertGreater(int(dict(counts)["images through InceptionV3"]), 10)
    self.assertEqual(outputs["dask"][0], counts)
    self.assertEqual(sorted(outputs["dask"][1]), sorted(shards))
    for name, data in shards.items():  # (assertEqual would diff megabytes on a failure)
      self.assertTrue(outputs["dask"][1][name] == data, f"{name} differs on the DaskRunner")

    # caption_images (RunInference over the SavedModel) on the same cluster writes DirectRunner's
    # captions, failures and summary; the empty image above is a failure in both.
    export_dir = os.path.join(self.tmp, "export")
    self._run([os.path.join(self.bin, "im2txt-export"), f"--checkpoint_path={init}",
               f"--vocab_file={direct_dir}/word_counts.txt", f"--export_dir={export_dir}",
               "--max_caption_length=8"])
    captions = {}
    for runner, flags in (("direct", ["--direct_num_workers=2"]), ("dask", on_cluster)):
      output_dir = os.path.join(self.tmp, f"captions_{runner}")
      self._run([os.path.join(self.bin, "im2txt-caption-images"),
                 f"--input_patterns={train_dir}/*.jpg", f"--saved_model_dir={export_dir}",
                 f"--output_dir={output_dir}", "--num_shards=3", "--batch_size=4"] + flags)
      files = {}
      for name in sorted(os.listdir(output_dir)):
        with open(os.path.join(output_dir, name)) as f:
          files[name] = f.read()
      summary = json.loads(files.pop("summary.json"))
      del summary["this_run"]["seconds"], summary["this_run"]["images_per_second"]
      captions[runner] = files, summary
    files, summary = captions["direct"]
    self.assertEqual(summary["images_captioned"], 23)
    self.assertEqual(list(summary["failed"]), ["empty_file"])
    self.assertEqual(len(files), 7)  # 3 caption shards, 3 failure shards, caption_job.json.
    self.assertEqual(captions["dask"], captions["direct"])


if __name__ == "__main__":
  unittest.main()
