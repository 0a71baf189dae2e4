"""Training machinery shared by the tasks: learning-rate and sampling schedules,
data parallelism, diagnostics and the run-folder lock."""
