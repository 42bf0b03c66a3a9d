"""The train stage: one session per stage, a fit per seed, checkpoints, resume, DDP and the code fingerprint."""
