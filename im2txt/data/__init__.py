"""The training input pipeline (tf.data over SequenceExample shards), the feature cache contract."""
