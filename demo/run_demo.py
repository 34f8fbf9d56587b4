r"""The whole flow end to end on the embedded sample dataset, and proof that it learned.

  bash tools/demo.sh                     # README command (1): set up, then this
  bazel run //demo:run_demo -- --output_dir=/tmp/im2txt_demo

Steps, each through the product's own binaries (as a user would run them):
  1. beam_jobs/make_sample_dataset   coloured shapes with 5 captions each    -> OUT/sample
  2. beam_jobs/build_mscoco_data     TFRecords + word_counts.txt (Beam)        -> OUT/data
  3. im2txt/evaluate                 started now, beside training              -> OUT/model/eval
  4. im2txt/train phase 1            Inception frozen, on cached features     -> OUT/model/train
     (train --number_of_steps=0 initialises the random Inception; with --concept_steps,
     train --objective=concepts first pretrains it and the concept head on the captions'
     concepts; then beam_jobs/extract_image_features computes each image's features once
     -> OUT/features)
  5. im2txt/train phase 2            everything trained, same train_dir
  6. the evaluator finishes the last checkpoint and exits
  7. im2txt/run_inference            held-out (test split) images             -> OUT/inference
  8. im2txt/score_captions           the same images, scored as the COCO server does
                                                                              -> OUT/inference/score
  9. a report: captions next to the ground truth, the held-out accuracy (the caption names the
     right colour and shape), perplexity and caption metrics, and the tensorboard command; and
     OUT/report.html, a page with every held-out image, its caption (OK/BAD against the ground
     truth) and the training and evaluation curves (loss, perplexity, BLEU-4, CIDEr per step).

Everything goes under --output_dir; a rerun starts the model afresh (the data are rebuilt
identically). No pretrained weights: Inception starts from a random initialisation.

The console shows the demo's own lines and the binaries' progress lines, without the libraries'
log lines and warnings; every byte of output is in OUT/logs/ (one file per binary, and demo.log
for this process's own library output).
"""

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

from demo import console_output

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The page to look at: every held-out image with its caption, and the curves.
REPORT_FILENAME = "report.html"
# Training crops (random crop and flip) cached per image for phase 1, besides the central one:
# one (the feature job's time goes with the views: 2.6 min for 3 views of 8,000 images).
NUM_FEATURE_VIEWS = 1
# The evaluator's scheduling priority below training's (measured, 2 cores: phase 2 ran at 1.1-1.6
# steps/s beside an evaluator of equal priority, 2.1 alone).
EVALUATOR_NICENESS = 10
# In OUT/logs: what this process's libraries write to stderr (TensorFlow, Beam, absl).
DEMO_LOG_FILENAME = "demo.log"


@dataclasses.dataclass
class DemoOptions:
  output_dir: str
  # Concept pretraining learns from fresh images: with ~1,500 it memorises them (measured by
  # bench_shape_signal's predecessor: ~1,300 images memorised, 10,000 generalise).
  num_train_images: int = 8000
  num_val_images: int = 600
  image_size: int = 96
  # Concept pretraining of the random Inception and the concept head (train
  # --objective=concepts) before phase 1; 0: none (then the model has no concept head).
  # Measured, this recipe: right colour and shape 96.7/98.3/95.0% for seeds 0/1/2 (seed 0 in
  # 16.1 min alone); 1,000 steps of "image" targets then 600 phase-1 steps: 61.7% (seed 0);
  # without pretraining (600 + 500 steps of phase 1 and 2): 23.3%.
  concept_steps: int = 2000
  # The concept head's targets (model.concept_targets): "caption", each record's own caption's
  # concepts, i.e. over an image's records the fraction of its captions naming each concept; or
  # "image", every concept any of its captions names. Measured by bench_shape_signal (concept
  # loss alone, held-out right shape after 1,000 steps, seed 1): 53.7% against 42.3%.
  concept_targets: str = "caption"
  # Phase 1 on the cached features: ~50 steps/s, the decoder learns to read the concepts.
  phase1_steps: int = 1000
  # Phase 2 (everything fine-tuned on the caption and concept losses) after the pretraining is
  # not measured yet: off by default.
  phase2_steps: int = 0
  batch_size: int = 32
  seed: int = 0
  train_shards: int = 4
  eval_num_examples: int = 500
  eval_caption_images: int = 60
  show_captions: int = 10
  # Checkpoints: one every this many steps, the last this many kept (bench_demo_curve keeps
  # them all to score each).
  checkpoint_every: int = 200
  keep_checkpoints: int = 5


@dataclasses.dataclass
class Accuracy:
  """How many of `images` captions name the image's colour and shape."""
  images: int
  correct: int  # Colour and shape.
  colours: int
  shapes: int
  complete: int  # Captions naming a colour and a shape, right or wrong.

  def fraction(self, count: int) -> float:
    return count / max(1, self.images)


def caption_accuracy(images, captions: Dict[str, str]) -> Accuracy:
  """Scores the best caption of each LabelledImage ({absolute path: caption}; a missing one
  counts as wrong) against its label."""
  from beam_jobs import make_sample_dataset as sample  # pylint: disable=g-import-not-at-top
  correct = colours = shapes = complete = 0
  for img in images:
    caption = captions.get(os.path.abspath(img.path), "")
    colour, shape = sample.caption_colour_shape(caption)
    correct += sample.is_correct_caption(caption, img.label)
    colours += colour == img.label.colour
    shapes += shape == img.label.shape
    complete += colour is not None and shape is not None
  return Accuracy(len(images), correct, colours, shapes, complete)


@dataclasses.dataclass
class DemoResult:
  accuracy: float  # Captions naming the image's colour and shape.
  colour_accuracy: float  # Captions naming its colour.
  shape_accuracy: float  # Captions naming its shape.
  complete_fraction: float  # Captions naming a colour and a shape, right or wrong.
  num_images: int
  num_captioned: int
  chance: float
  eval_scalars: Dict[int, Dict[str, float]]
  train_event_files: List[str]
  eval_event_files: List[str]
  vocab_size: int
  # score_captions' figures on the held-out images (BLEU-1..4, METEOR, ROUGE-L, CIDEr).
  score_metrics: Dict[str, float]
  # OUT/report.html: every held-out image with its caption, and the curves.
  report_file: str = ""


def _log(message: str) -> None:
  print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _env() -> Dict[str, str]:
  # No TF_CPP_MIN_LOG_LEVEL or PYTHONWARNINGS of the demo's own: the console is kept clean by
  # filtering what is shown (console_output), so the log files keep everything the binaries say.
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  return env


def _module_command(module: str, args: List[str]) -> List[str]:
  return [sys.executable, "-m", module] + args


def _run(module: str, args: List[str], log_path: str) -> None:
  """Runs one of the product's binaries, its output teed to a log file; fails loudly."""
  command = _module_command(module, args)
  _log(f"$ python -m {module} " + " ".join(args))
  with open(log_path, "w") as log, subprocess.Popen(
      command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      cwd=REPO_ROOT) as process:
    for line in process.stdout:
      log.write(line)
      text = console_output.shown_text(line)
      if text is not None:
        print("    " + text, flush=True)
    process.wait()
  if process.returncode != 0:
    raise RuntimeError(f"{module} failed with exit code {process.returncode}; see {log_path}")


def start_niced(command: List[str], niceness: int, log) -> subprocess.Popen:
  """Starts `command` (stdout and stderr to the open file `log`) `niceness` below this process.

  The priority is set as soon as the child exists, while its interpreter is still starting and
  before it starts any thread (TensorFlow's threads then inherit it). Not `preexec_fn`: this
  process may already run TensorFlow's threads, and preexec_fn is unsafe with threads.
  """
  process = subprocess.Popen(command, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                             cwd=REPO_ROOT)
  try:
    os.setpriority(os.PRIO_PROCESS, process.pid,
                   min(19, os.getpriority(os.PRIO_PROCESS, 0) + niceness))
  except OSError:
    process.kill()
    process.wait()
    raise
  return process


def _fresh_dir(path: str) -> str:
  if os.path.exists(path):
    shutil.rmtree(path)
  os.makedirs(path)
  return path


def _read_scalars(event_dir: str) -> Dict[int, Dict[str, float]]:
  """{step: {tag: value}} of the scalar summaries in event_dir's event files."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  scalars: Dict[int, Dict[str, float]] = {}
  for path in sorted(tf.io.gfile.glob(os.path.join(event_dir, "events.out.tfevents.*"))):
    # Read as plain TFRecords (summary_iterator prints a deprecation warning into the report).
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.HasField("simple_value"):
          number = value.simple_value
        elif (value.HasField("tensor") and value.tensor.dtype in (1, 2)  # float, double
              and tf.make_ndarray(value.tensor).ndim == 0):  # Not a histogram.
          number = float(tf.make_ndarray(value.tensor))
        else:
          continue
        scalars.setdefault(int(event.step), {})[value.tag] = number
  return scalars


def run_demo(options: DemoOptions) -> DemoResult:
  out = os.path.abspath(options.output_dir)
  os.makedirs(out, exist_ok=True)
  logs = _fresh_dir(os.path.join(out, "logs"))
  # Before TensorFlow is imported: its import writes C++ log lines.
  with console_output.stderr_to(os.path.join(logs, DEMO_LOG_FILENAME)):
    return _run_steps(options, out, logs)


def _run_steps(options: DemoOptions, out: str, logs: str) -> DemoResult:
  from beam_jobs import make_sample_dataset as sample  # pylint: disable=g-import-not-at-top
  from im2txt import configuration  # pylint: disable=g-import-not-at-top

  started = time.time()

  _log(f"1/8 sample dataset: {options.num_train_images} train + {options.num_val_images} val "
       f"images of coloured shapes -> {out}/sample")
  dataset = sample.make_sample_dataset(
      _fresh_dir(os.path.join(out, "sample")), num_train_images=options.num_train_images,
      num_val_images=options.num_val_images, image_size=options.image_size, seed=options.seed)

  data_dir = os.path.join(out, "data")
  _log(f"2/8 Beam job -> {data_dir}")
  _run("beam_jobs.build_mscoco_data",
       dataset.build_args() + [f"--output_dir={data_dir}", f"--train_shards={options.train_shards}",
                               "--val_shards=1", "--test_shards=1", "--min_word_count=4"],
       os.path.join(logs, "build_mscoco_data.log"))
  vocab_file = os.path.join(data_dir, "word_counts.txt")

  model_dir = _fresh_dir(os.path.join(out, "model"))
  train_dir = os.path.join(model_dir, "train")
  eval_dir = os.path.join(model_dir, "eval")
  config = configuration.small_config()
  config.input.batch_size = options.batch_size
  config.training.save_checkpoint_steps = options.checkpoint_every
  config.training.max_checkpoints_to_keep = options.keep_checkpoints
  if options.concept_steps:
    # The small preset's concept head, which the pretraining trains; its probabilities are
    # given to the LSTM at the start (LSTM-A), and phase 1 leaves it as it is (weight 0, the
    # recipe measured below).
    config.model = dataclasses.replace(config.model, concept_loss_weight=0.0,
                                       concept_targets=options.concept_targets)
  else:
    # The recipe before concept pretraining (bench_demo_curve): the original's decoder.
    config.model = configuration.without_concept_head(config.model)
  config_file = os.path.join(model_dir, "demo_config.json")
  with open(config_file, "w") as f:
    json.dump(configuration.config_to_dict(config), f, indent=2)
  total_steps = options.concept_steps + options.phase1_steps + options.phase2_steps

  _log(f"3/8 evaluator started beside training -> {eval_dir}")
  os.makedirs(train_dir, exist_ok=True)
  eval_log = open(os.path.join(logs, "evaluate.log"), "w")
  # Training first: on a machine with fewer cores than the two need, the evaluator takes the
  # cycles training leaves (it scores the latest checkpoint when it gets to it, and the last one
  # after training).
  evaluator = start_niced(
      _module_command("im2txt.evaluate", [
          f"--input_file_pattern={data_dir}/val-*", f"--checkpoint_dir={train_dir}",
          f"--eval_dir={eval_dir}", "--eval_interval_secs=5",
          # Not the pretraining's checkpoints: their decoder has not trained yet.
          f"--num_eval_examples={options.eval_num_examples}",
          f"--min_global_step={options.concept_steps + 1}",
          f"--vocab_file={vocab_file}", f"--num_caption_images={options.eval_caption_images}",
          f"--number_of_steps={total_steps}"]),
      EVALUATOR_NICENESS, eval_log)
  try:
    common = [f"--train_dir={train_dir}", f"--config_file={config_file}",
              "--log_every_n_steps=50", f"--seed={options.seed}"]
    images = f"--input_file_pattern={data_dir}/train-*"
    features_dir = _fresh_dir(os.path.join(out, "features"))
    _log(f"4/8 phase 1: Inception frozen, {options.phase1_steps} steps on cached Inception "
         f"features -> {features_dir}")
    # The sample dataset has no pretrained Inception: it starts random, on purpose, initialised
    # and calibrated by a 0-step run; the feature job computes each image's features with it
    # once (the evaluation crop and NUM_FEATURE_VIEWS training crops), and phase 1 trains on them.
    _run("im2txt.train", common + [images, "--inception_checkpoint_file=random",
                                   "--number_of_steps=0"],
         os.path.join(logs, "train_init.log"))
    if options.concept_steps:
      _log(f"    concept pretraining: Inception and the concept head, {options.concept_steps} "
           "steps on the images' concepts")
      _run("im2txt.train", common + [images, "--objective=concepts", "--train_inception=true",
                                     f"--number_of_steps={options.concept_steps}"],
           os.path.join(logs, "train_concepts.log"))
    _run("beam_jobs.extract_image_features",
         [f"--input_file_pattern={data_dir}/train-*", f"--output_dir={features_dir}",
          f"--train_dir={train_dir}", f"--num_views={NUM_FEATURE_VIEWS}",
          f"--seed={options.seed}"],
         os.path.join(logs, "extract_image_features.log"))
    phase1_end = options.concept_steps + options.phase1_steps
    _run("im2txt.train", common + [f"--input_file_pattern={features_dir}/train-*",
                                   "--train_inception=false", f"--number_of_steps={phase1_end}"],
         os.path.join(logs, "train_phase1.log"))
    if options.phase2_steps:
      _log(f"5/8 phase 2: everything trained on the images, to step {total_steps}")
      _run("im2txt.train", common + [images, "--train_inception=true",
                                     f"--number_of_steps={total_steps}"],
           os.path.join(logs, "train_phase2.log"))
    else:
      _log("5/8 phase 2: skipped (--phase2_steps=0)")
    _log("6/8 waiting for the evaluator to score the last checkpoint")
    try:
      evaluator.wait(timeout=300)
    except subprocess.TimeoutExpired:
      _log("the evaluator did not finish in 5 minutes; stopping it")
  finally:
    if evaluator.poll() is None:
      evaluator.terminate()
      try:
        evaluator.wait(timeout=60)
      except subprocess.TimeoutExpired:
        evaluator.kill()
    eval_log.close()

  _log("7/8 captioning the held-out test-split images")
  test_images = sample.split_images(dataset, "test")
  inference_dir = _fresh_dir(os.path.join(out, "inference"))
  captions_json = os.path.join(inference_dir, "captions.json")
  list_file = ",".join(img.path for img in test_images)
  inference_log = os.path.join(logs, "run_inference.log")
  with open(captions_json, "w") as f, open(inference_log, "w") as log:
    process = subprocess.run(
        _module_command("im2txt.run_inference", [
            f"--checkpoint_path={train_dir}", f"--vocab_file={vocab_file}",
            f"--input_files={list_file}", "--output_format=json"]),
        env=_env(), stdout=f, stderr=log, text=True, cwd=REPO_ROOT)
  if process.returncode != 0:
    with open(inference_log) as log:
      raise RuntimeError(f"run_inference failed ({process.returncode}); see {inference_log}:\n"
                         f"{log.read()[-2000:]}")
  _log("8/8 scoring the held-out images as the COCO caption evaluation does")
  score_metrics = _score_test_split(dataset, test_images, train_dir, vocab_file, inference_dir,
                                    logs)
  result = _report(options, test_images, captions_json, train_dir, eval_dir, vocab_file, out,
                   time.time() - started, score_metrics)
  return result


def _score_test_split(dataset, test_images, train_dir: str, vocab_file: str, inference_dir: str,
                      logs: str) -> Dict[str, float]:
  """score_captions on the held-out images: their own COCO captions file, then the figures."""
  with open(dataset.val_captions_file) as f:
    val = json.load(f)
  test_ids = {img.image_id for img in test_images}
  annotations_file = os.path.join(inference_dir, "captions_test.json")
  with open(annotations_file, "w") as f:
    json.dump({"images": [i for i in val["images"] if i["id"] in test_ids],
               "annotations": [a for a in val["annotations"] if a["image_id"] in test_ids]}, f)
  results_file = os.path.join(inference_dir, "score", "results.json")
  _run("im2txt.score_captions", [
      f"--checkpoint_path={train_dir}", f"--vocab_file={vocab_file}",
      f"--annotations_file={annotations_file}", f"--image_dir={dataset.val_image_dir}",
      f"--results_file={results_file}"], os.path.join(logs, "score_captions.log"))
  with open(os.path.join(inference_dir, "score", "results.per_image.json")) as f:
    return json.load(f)["metrics"]


def _load_captions(path: str) -> Dict[str, Tuple[str, float]]:
  """run_inference's JSON output file -> parse_captions."""
  with open(path) as f:
    return parse_captions(f.read())


def _json_records(text: str) -> List[dict]:
  """run_inference's JSON output (a list, or one object per line) -> its records."""
  text = text.strip()
  return json.loads(text) if text.startswith("[") else [json.loads(l) for l in text.splitlines()
                                                        if l.strip()]


def parse_captions(text: str) -> Dict[str, Tuple[str, float]]:
  """run_inference's JSON output -> {absolute image path: (best caption, its probability)}."""
  return {os.path.abspath(r["file"]): ((r["captions"][0], math.exp(r["log_probs"][0]))
                                       if r["captions"] else ("", 0.0))
          for r in _json_records(text)}


def parse_concepts(text: str) -> Dict[str, List[Tuple[str, float]]]:
  """run_inference's JSON output -> {absolute image path: its top concepts (word, probability),
  best first} (empty for a model without a concept head)."""
  return {os.path.abspath(r["file"]): [(c["word"], c["probability"])
                                       for c in r.get("concepts", [])]
          for r in _json_records(text)}


def _write_html_report(path: str, rows, train_scalars, eval_scalars, summary: str) -> None:
  """report.html: the curves from the event files, then every held-out image with its caption,
  the ground truth and OK/BAD."""
  from im2txt import file_io  # pylint: disable=g-import-not-at-top
  from im2txt.inference import caption_page  # pylint: disable=g-import-not-at-top
  charts = []
  for title, scalars, tag in (("training loss (batch)", train_scalars, "losses/batch_loss"),
                              ("evaluation perplexity", eval_scalars, "Perplexity"),
                              ("evaluation BLEU-4", eval_scalars, "BLEU-4"),
                              ("evaluation CIDEr", eval_scalars, "CIDEr")):
    points = [(step, values[tag]) for step, values in scalars.items() if tag in values]
    charts.append(caption_page.line_chart(f"{title} per step", points))
  entries = []
  for image_path, caption, probability, truth, ok, concepts in rows:
    with open(image_path, "rb") as f:
      data = f.read()
    entries.append(caption_page.Entry(
        os.path.basename(image_path), data, [(caption, probability)] if caption else [],
        error="" if caption else "no caption", note=f"{'OK' if ok else 'BAD'}  truth: {truth}",
        concepts=concepts))
  file_io.write_file(path, caption_page.render(
      entries, title="im2txt demo: held-out images", intro=summary, charts=charts))


def _report(options, test_images, captions_json, train_dir, eval_dir, vocab_file, out,
            seconds, score_metrics) -> DemoResult:
  from beam_jobs import make_sample_dataset as sample  # pylint: disable=g-import-not-at-top
  from im2txt import vocabulary  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  best = _load_captions(captions_json)
  with open(captions_json) as f:
    top_concepts = parse_concepts(f.read())
  rows = []
  for img in test_images:
    caption, probability = best.get(os.path.abspath(img.path), ("", 0.0))
    rows.append((img.path, caption, probability, f"{img.label.colour} {img.label.shape}",
                 sample.is_correct_caption(caption, img.label),
                 top_concepts.get(os.path.abspath(img.path), [])))
  score = caption_accuracy(test_images, {path: c for path, (c, _) in best.items()})
  correct, colours, shapes = score.correct, score.colours, score.shapes
  num_images = max(1, len(test_images))
  accuracy = correct / num_images
  chance = 1.0 / (len(sample.COLOURS) * len(sample.SHAPES))
  print("\nHeld-out images (test split), best beam-search caption vs ground truth:")
  for path, caption, _, truth, ok, concepts in rows[:options.show_captions]:
    print(f"  {'OK ' if ok else 'BAD'} {os.path.basename(path)}: {caption!r}   (truth: {truth})")
    if concepts:  # What the encoder sees: the concept head's most probable words.
      print("      concepts: " + ", ".join(f"{w} {p:.2f}" for w, p in concepts))
  summary = (f"Held-out accuracy (caption names the right colour and shape): {correct}/"
             f"{len(test_images)} = {accuracy:.1%}   (chance: {chance:.1%}); right colour "
             f"{colours / num_images:.1%} (chance {1 / len(sample.COLOURS):.1%}), right shape "
             f"{shapes / num_images:.1%} (chance {1 / len(sample.SHAPES):.1%})")
  print("\n" + summary)
  eval_scalars = _read_scalars(eval_dir)
  if eval_scalars:
    last = max(eval_scalars)
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(eval_scalars[last].items()))
    print(f"Evaluator at step {last} ({len(eval_scalars)} checkpoints evaluated): {metrics}")
  else:
    print("The evaluator wrote no scores (see logs/evaluate.log).")
  print(f"score_captions on the {len(test_images)} held-out images (raw COCO captions, PTB "
        "tokenizer): " + ", ".join(f"{k} {v:.3f}" for k, v in score_metrics.items()))
  vocab_size = len(vocabulary.Vocabulary.from_file(vocab_file))
  train_events = tf.io.gfile.glob(os.path.join(train_dir, "**", "events.out.tfevents.*")) + \
      tf.io.gfile.glob(os.path.join(train_dir, "events.out.tfevents.*"))
  eval_events = tf.io.gfile.glob(os.path.join(eval_dir, "events.out.tfevents.*"))
  report_file = os.path.join(out, REPORT_FILENAME)
  _write_html_report(report_file, rows, _read_scalars(train_dir), eval_scalars, summary)
  print(f"Vocabulary: {vocab_size} ids. Finished in {seconds / 60:.1f} min. Outputs: {out}")
  print(f"Look at the captions: open {report_file} in a browser (every held-out image with its "
        "caption, the ground truth and the training and evaluation curves)")
  print(f"Look at the run: tensorboard --logdir {os.path.join(out, 'model')}")
  return DemoResult(accuracy=accuracy, colour_accuracy=colours / num_images,
                    shape_accuracy=shapes / num_images,
                    complete_fraction=score.complete / num_images, num_images=len(test_images),
                    num_captioned=len(best), chance=chance, eval_scalars=eval_scalars,
                    train_event_files=sorted(set(train_events)),
                    eval_event_files=eval_events, vocab_size=vocab_size,
                    score_metrics=score_metrics, report_file=report_file)


def parse_args(argv: Optional[List[str]] = None) -> DemoOptions:
  defaults = DemoOptions(output_dir="")
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", default="im2txt_demo",
                      help="Everything the demo writes goes here (relative to the current "
                           "directory, or to where `bazel run` was called).")
  for field in dataclasses.fields(DemoOptions):
    if field.name != "output_dir":
      parser.add_argument(f"--{field.name}", type=field.type if field.type != "int" else int,
                          default=getattr(defaults, field.name))
  args = parser.parse_args(argv)
  output_dir = args.output_dir
  if not os.path.isabs(output_dir) and os.environ.get("BUILD_WORKING_DIRECTORY"):
    output_dir = os.path.join(os.environ["BUILD_WORKING_DIRECTORY"], output_dir)
  values = vars(args)
  values["output_dir"] = output_dir
  return DemoOptions(**values)


def main(argv: Optional[List[str]] = None) -> int:
  options = parse_args(argv)
  result = run_demo(options)
  # Exit 1 when a stage left nothing to score; the accuracy itself is reported, not judged.
  return 0 if result.num_captioned == result.num_images and result.eval_scalars else 1


if __name__ == "__main__":
  sys.exit(main())
