"""Hydra sweeper plugin `dlrun_importance`: the importance-ordered sweep (`dlrun -m sweep=importance`)."""
