"""dlrunner: a deep-learning experiment runner driven by declarative Hydra configs."""

__version__ = "0.1.0"
