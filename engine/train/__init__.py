"""Fine-tuning an image tower: standard, linearized, and τJp-regularised."""
