"""The two-phase trainer: its options, state, step and loop, optimisation, logs and TensorBoard."""
