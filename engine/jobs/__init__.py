"""Background jobs: the runner (progress, cancel, one job per device) and one module per job kind."""
