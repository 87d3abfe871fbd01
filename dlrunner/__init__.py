"""dlrunner: a deep-learning experiment runner driven by declarative Hydra configs."""
from dlrunner import moved as _moved
__version__ = "0.1.0"

_moved.install()  # the config builders' old module paths (dlrunner.optim, dlrunner.schedules...) name the moved modules
