"""The Show and Tell model: InceptionV3 image encoder + LSTM caption decoder (Keras 2).

Training (`call`, teacher forcing):
    images [B, H, W, 3] in [-1, 1] -> InceptionV3 (no top, average pooled) -> 2048-d
    -> dense (no bias) [-> batch norm, if configured] -> image embedding [B, E], fed to the
       LSTM first from a zero state
       (its output is discarded), then the word embeddings of `input_seqs` [B, T] follow
    -> logits [B, T, vocab] predicting `target_seqs`.

  For the caption "<S> a dog </S>" (ids 1 5 9 2), the input pipeline gives
      input_seqs  = [1, 5, 9]      (<S> a dog)
      target_seqs = [5, 9, 2]      (a dog </S>)
      input_mask  = [1, 1, 1]      (0 where a shorter caption is padded)

Inference is two methods, all beam search needs:
    initial_state(images)           -> state after the image step
    step(word_ids, state)           -> (log_probs [B, vocab], new state)
A state is a tuple (h, c) of [B, num_lstm_units] tensors (with concept_input "every_step",
(h, c, concepts): the projected concept probabilities [B, embedding_size] added to every input).

With a concept head (model.num_concepts > 0, see concept_head.py), `caption_and_concept_logits`
gives the training step both outputs, and `concept_probabilities(images)` what the encoder sees.
`initial_state_from_features` and `concept_probabilities_from_features` take Inception's pooled
features instead of images, so that one encoder pass gives both the captions and the concepts.
"""

from typing import List, Tuple

import tensorflow as tf

from im2txt import configuration
from im2txt.model import concept_head
from im2txt.model import slim_inception
from im2txt.model import tfa_ops

State = Tuple[tf.Tensor, tf.Tensor]


def _uniform(scale: float) -> tf.keras.initializers.Initializer:
  return tf.keras.initializers.RandomUniform(minval=-scale, maxval=scale)


def check_config(config: configuration.ModelConfig) -> None:
  """A ValueError naming the field for a model setting no model can be built with."""
  if not 0.0 <= config.inception_batch_norm_momentum <= 1.0:
    raise ValueError("model.inception_batch_norm_momentum must be in [0, 1], not "
                     f"{config.inception_batch_norm_momentum}")
  concept_head.check_config(config)


class ShowAndTellModel(tf.keras.Model):
  """Show and Tell with the original im2txt's architecture; sizes from a ModelConfig."""

  def __init__(self, config: configuration.ModelConfig, train_inception: bool = False,
               **kwargs):
    super().__init__(name="show_and_tell", **kwargs)
    check_config(config)
    self.config = config
    self.inception = tf.keras.applications.InceptionV3(
        include_top=False, weights=None, pooling="avg",
        input_shape=(config.image_height, config.image_width, 3))
    for layer in self._inception_batch_norms():
      layer.momentum = config.inception_batch_norm_momentum
    self.inception_dropout = tf.keras.layers.Dropout(
        1.0 - config.inception_dropout_keep_prob, name="inception_dropout")
    scale = config.initializer_scale
    self.image_embedding = tf.keras.layers.Dense(
        config.embedding_size, use_bias=False, kernel_initializer=_uniform(scale),
        name="image_embedding")
    # Optional (not in the original): batch norm on the image embedding, e.g. for a randomly
    # initialised Inception, whose pooled features share a large common component. Synchronized:
    # its batch statistics are the global batch's under a distribution strategy.
    self.image_embedding_norm = (
        tf.keras.layers.BatchNormalization(synchronized=True, name="image_embedding_batch_norm")
        if config.image_embedding_batch_norm else None)
    self.seq_embedding = tf.keras.layers.Embedding(
        config.vocab_size, config.embedding_size, embeddings_initializer=_uniform(scale),
        name="seq_embedding")
    # unit_forget_bias: forget-gate bias 1, as the original BasicLSTMCell's forget_bias=1.0.
    self.lstm_cell = tf.keras.layers.LSTMCell(
        config.num_lstm_units, kernel_initializer=_uniform(scale),
        recurrent_initializer=_uniform(scale), unit_forget_bias=True, name="lstm")
    self.lstm = tf.keras.layers.RNN(self.lstm_cell, return_sequences=True, name="lstm_rnn")
    lstm_dropout = 1.0 - config.lstm_dropout_keep_prob
    self.lstm_input_dropout = tf.keras.layers.Dropout(lstm_dropout, name="lstm_input_dropout")
    self.lstm_output_dropout = tf.keras.layers.Dropout(lstm_dropout, name="lstm_output_dropout")
    self.logits_layer = tf.keras.layers.Dense(
        config.vocab_size, kernel_initializer=_uniform(scale), name="logits")
    # Visual concepts (off in the default preset: no variable is added to the original's model).
    self.concept_head = (
        tf.keras.layers.Dense(config.num_concepts, kernel_initializer=_uniform(scale),
                              name="concept_head")
        if config.num_concepts else None)
    self.concept_embedding = (
        tf.keras.layers.Dense(config.embedding_size, use_bias=False,
                              kernel_initializer=_uniform(scale), name="concept_embedding")
        if config.concept_input != "none" else None)
    self.set_train_inception(train_inception)

  def set_train_inception(self, train_inception: bool) -> None:
    """Phase 1 (False): Inception frozen, in inference mode. Phase 2 (True): fine-tuned."""
    self.train_inception = bool(train_inception)
    self.inception.trainable = self.train_inception

  def build_all(self) -> None:
    """Creates every variable (a one-word forward pass), e.g. before restoring a checkpoint."""
    c = self.config
    images = tf.zeros([1, c.image_height, c.image_width, 3])
    self({"images": images, "input_seqs": tf.zeros([1, 1], tf.int64)}, training=False)

  # --- encoder -----------------------------------------------------------------------------

  def image_features(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
    """InceptionV3's pooled 2048-d features; batch norm and dropout train only in phase 2."""
    inception_training = bool(training) and self.train_inception
    features = self.inception(images, training=inception_training)
    if inception_training:
      features = self.inception_dropout(features, training=True)
    if not self.train_inception:
      # Phase 1: nothing flows back into Inception, so no gradient work is spent on it.
      features = tf.stop_gradient(features)
    return features

  def embed_images(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
    return self.embed_image_features(self.image_features(images, training=training), training)

  def embed_image_features(self, features: tf.Tensor, training: bool = False) -> tf.Tensor:
    """Pooled Inception features [B, 2048] -> image embeddings [B, E]."""
    embeddings = self.image_embedding(features)
    if self.image_embedding_norm is not None:
      embeddings = self.image_embedding_norm(embeddings, training=training)
    return embeddings

  def _zero_state(self, batch_size) -> State:
    units = self.config.num_lstm_units
    dtype = self.compute_dtype
    return (tf.zeros([batch_size, units], dtype), tf.zeros([batch_size, units], dtype))

  def _image_step(self, image_embeddings: tf.Tensor, training: bool) -> State:
    inputs = self.lstm_input_dropout(image_embeddings, training=training)
    _, state = self.lstm_cell(inputs, self._zero_state(tf.shape(image_embeddings)[0]),
                              training=training)
    return tuple(state)

  # --- training ----------------------------------------------------------------------------

  def call(self, inputs, training: bool = False) -> tf.Tensor:
    """inputs: {"images": [B,H,W,3] float, "input_seqs": [B,T] int} -> logits [B,T,vocab].

    Phase 1 may give "image_features" [B, 2048] instead of "images": Inception's pooled features
    of the images, computed beforehand by this model's frozen Inception (a feature cache, see
    beam_jobs/extract_image_features); the result is the same as on the images.
    """
    return self.caption_and_concept_logits(inputs, training)[0]

  def caption_and_concept_logits(self, inputs, training: bool = False):
    """As `call`, and the concept head's logits [B, num_concepts] (None without a head)."""
    embeddings, concepts, concept_logits = self._first_input(inputs, training)
    state = self._image_step(embeddings, training)
    words = self.seq_embedding(inputs["input_seqs"])
    if self.config.concept_input == "every_step":
      words += concepts[:, tf.newaxis, :]
    words = self.lstm_input_dropout(words, training=training)
    outputs = self.lstm(words, initial_state=list(state), training=training)
    outputs = self.lstm_output_dropout(outputs, training=training)
    return self.logits_layer(outputs), concept_logits

  def sample_captions(self, inputs, start_ids: tf.Tensor, num_samples: int,
                      uniforms: tf.Tensor, training: bool = True):
    """Samples `num_samples` captions per image, word by word, from the model's softmax (for
    self-critical training), in the same mode as the teacher-forced training pass (dropout and
    batch norm as in `call`), so the log-probabilities are those of the sampling policy.

    inputs: {"images"} or {"image_features"} of B images; start_ids [B] (<S>); uniforms
    [B * num_samples, T] in [0, 1): one per sampled word, drawn by the caller (inverse-CDF
    sampling: the samples are a function of them). Returns (word ids [B * num_samples, T] int32,
    the samples of image i in rows i * num_samples ...; their log-probabilities [B*S, T] float32,
    differentiable). Words after a sample's </S> are sampled too: the caller masks them.
    """
    embeddings, concepts, _ = self._first_input(inputs, training)
    if concepts is not None:
      concepts = tf.repeat(concepts, num_samples, axis=0)
    state = self._image_step(tf.repeat(embeddings, num_samples, axis=0), training)
    words = tf.repeat(tf.cast(start_ids, tf.int32), num_samples, axis=0)
    ids, log_probs = [], []
    for t in range(uniforms.shape[1]):
      inputs_t = self.seq_embedding(words)
      if self.config.concept_input == "every_step":
        inputs_t += concepts
      inputs_t = self.lstm_input_dropout(inputs_t, training=training)
      output, state = self.lstm_cell(inputs_t, list(state), training=training)
      output = self.lstm_output_dropout(output, training=training)
      step_log_probs = tf.nn.log_softmax(tf.cast(self.logits_layer(output), tf.float32))
      cdf = tf.cumsum(tf.exp(tf.stop_gradient(step_log_probs)), axis=-1)
      words = tf.reduce_sum(tf.cast(cdf < uniforms[:, t:t + 1] * cdf[:, -1:], tf.int32), -1)
      words = tf.minimum(words, self.config.vocab_size - 1)
      ids.append(words)
      log_probs.append(tf.gather(step_log_probs, words, batch_dims=1))
    return tf.stack(ids, 1), tf.stack(log_probs, 1)

  def _first_input(self, inputs, training: bool):
    """(the LSTM's first input [B, E]: the image embedding, plus the projected concept
    probabilities with concept_input; those [B, E] or None; the concept logits or None)."""
    if "image_features" in inputs:
      if self.train_inception:
        raise ValueError("Phase 2 (train_inception) fine-tunes Inception: it trains on images, "
                         "not on cached Inception features")
      features = inputs["image_features"]
    else:
      features = self.image_features(inputs["images"], training=training)
    return self._first_input_from_features(features, training)

  def _first_input_from_features(self, features: tf.Tensor, training: bool):
    """As `_first_input`, from Inception's pooled features [B, 2048]."""
    embeddings = self.embed_image_features(features, training=training)
    concept_logits = self._concept_logits(features)
    concepts = self._concept_inputs(concept_logits)
    if concepts is not None:
      embeddings += concepts
    return embeddings, concepts, concept_logits

  # --- visual concepts ---------------------------------------------------------------------

  def _concept_logits(self, features: tf.Tensor):
    return None if self.concept_head is None else self.concept_head(features)

  def _concept_inputs(self, concept_logits):
    """The concept probabilities as LSTM input [B, E], or None (concept_input "none"). The
    caption loss does not flow back into the head through them."""
    if self.concept_embedding is None:
      return None
    return self.concept_embedding(tf.stop_gradient(tf.sigmoid(concept_logits)))

  def concept_logits(self, inputs, training: bool = False) -> tf.Tensor:
    """The concept head alone (no decoder): {"images"} or {"image_features"} -> [B, concepts]."""
    if "image_features" in inputs:
      return self.concept_head(inputs["image_features"])
    return self.concept_head(self.image_features(inputs["images"], training=training))

  def concept_variables(self) -> List[tf.Variable]:
    """What the concept loss alone trains: the head, and Inception while it is trained."""
    return self.inception.trainable_variables + self.concept_head.trainable_variables

  def concept_probabilities(self, images: tf.Tensor) -> tf.Tensor:
    """The concept head's probabilities [B, num_concepts] float32 (inference mode)."""
    return self.concept_probabilities_from_features(self.image_features(images, training=False))

  def concept_probabilities_from_features(self, features: tf.Tensor) -> tf.Tensor:
    """As `concept_probabilities`, from Inception's pooled features [B, 2048]."""
    if self.concept_head is None:
      raise ValueError("This model has no concept head (model.num_concepts is 0)")
    return tf.sigmoid(tf.cast(self.concept_head(features), tf.float32))

  def token_losses(self, logits: tf.Tensor, target_seqs: tf.Tensor,
                   input_mask: tf.Tensor) -> tf.Tensor:
    """Per-token cross-entropy [B, T] in float32, zero on padding."""
    return tfa_ops.masked_token_losses(logits, target_seqs, input_mask)

  # --- inference ---------------------------------------------------------------------------

  def initial_state(self, images: tf.Tensor) -> State:
    """The LSTM state after feeding the image embedding (inference mode)."""
    return self.initial_state_from_features(self.image_features(images, training=False))

  def initial_state_from_features(self, features: tf.Tensor) -> State:
    """As `initial_state`, from Inception's pooled features [B, 2048]: run_inference computes
    them once for both the captions and the concepts (Inception is most of the work)."""
    embeddings, concepts, _ = self._first_input_from_features(features, training=False)
    state = self._image_step(embeddings, training=False)
    if concepts is not None and self.config.concept_input == "every_step":
      return state + (concepts,)
    return state

  def step(self, word_ids: tf.Tensor, state: State) -> Tuple[tf.Tensor, State]:
    """One decoding step: word_ids [B] -> (log-probabilities [B, vocab] float32, new state)."""
    words = self.seq_embedding(word_ids)
    if len(state) == 3:  # concept_input "every_step": the concepts ride along in the state.
      words += state[2]
    output, new_state = self.lstm_cell(words, list(state[:2]), training=False)
    logits = tf.cast(self.logits_layer(output), tf.float32)
    return tf.nn.log_softmax(logits), tuple(new_state) + tuple(state[2:])

  # --- Inception initialisation ------------------------------------------------------------

  def load_inception_weights(self, path: str) -> None:
    """Loads InceptionV3's weights from a local file, recognised by its content; nothing is
    downloaded: a TF-slim checkpoint (`inception_v3.ckpt`, as the original im2txt used, or any
    checkpoint with slim's `InceptionV3/...` variables) or a Keras no-top `.h5` weights file."""
    if slim_inception.weights_file_format(path) == slim_inception.SLIM_CHECKPOINT:
      slim_inception.load_checkpoint(self.inception, path)
      return
    try:
      self.inception.load_weights(path)
    except (ValueError, OSError) as e:
      raise ValueError(f"{path}: not a Keras InceptionV3 no-top weights file ({e})") from e

  def synchronize_inception_batch_norm(self) -> None:
    """Inception's batch norms compute their training statistics over the global batch (all
    replicas) instead of each replica's share, as `BatchNormalization(synchronized=True)`.

    For phase 2 on several replicas; it changes no variable (checkpoints are unaffected), and on
    one replica the result is the same as without (at the cost of the unfused kernel).
    """
    for layer in self._inception_batch_norms():
      layer.synchronized = True
      layer.fused = False  # The fused kernel cannot synchronise.

  def _inception_batch_norms(self) -> List[tf.keras.layers.BatchNormalization]:
    return [l for l in self.inception.layers
            if isinstance(l, tf.keras.layers.BatchNormalization)]

  def calibrate_inception_batch_norm(self, images: tf.Tensor) -> None:
    """Sets every Inception batch-norm moving statistic to this batch's statistics.

    For a randomly initialised Inception (no weights file, e.g. the sample dataset): with the
    initial moving statistics (mean 0, variance 1) a random InceptionV3's pooled features are
    ~1e-3 in inference mode and nearly useless to a frozen-encoder phase 1; calibrated, they are
    O(1) and keep the image's content. Done once, before the first checkpoint.
    """
    layers = self._inception_batch_norms()
    momenta = [l.momentum for l in layers]
    try:
      # A frozen Keras BatchNormalization always runs in inference mode; unfreeze it for this pass.
      self.inception.trainable = True
      for layer in layers:
        layer.momentum = 0.0
      self.inception(images, training=True)
    finally:
      for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
      self.inception.trainable = self.train_inception
