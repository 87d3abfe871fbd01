"""What a run writes and draws: the console, the run folder (rundir, summary), metrics loggers,
pictures (plots on canvas, drawn by the painter), error analysis, the fit verdict and timings."""
