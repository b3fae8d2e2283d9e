"""Evaluation: scoring, the byte rules, TTT and its adapters, n-gram tilt, comparison, sensitivity."""
