"""Sweeps and coefficient searches as batches of trials: grids over a method's declared parameters, TPE
and CMA-ES over per-task λ, evaluated in process or by Ray actors (one per GPU or core)."""
