"""dlrunner: a deep-learning experiment runner driven by declarative Hydra configs."""
from dlrunner import moved as _moved
__version__ = "0.1.0"

_moved.install()  # old module paths (dlrunner.engine.loop, dlrunner.modes.train...) name the moved modules
