"""The run's plumbing: settings + Config, run directory, checkpoints, atomic writes, ranks, errors."""
