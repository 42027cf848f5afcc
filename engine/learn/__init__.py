"""Learned merge coefficients: aTLAS (per task and block) and DV-BASI (per block, iterated)."""
