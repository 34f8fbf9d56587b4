"""Evaluation: the concurrent checkpoint evaluator, caption metrics, and scoring a whole split."""
