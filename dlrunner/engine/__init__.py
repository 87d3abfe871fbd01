"""What training runs on: the epoch loop (loop.py), precision, out-of-memory splitting, batch-size
search, checkpoints, data parallelism, and the optimizer and schedule builders that conf/ names."""
