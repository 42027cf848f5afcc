"""The demo zoo's build stages: pretraining, fine-tunes, variants, STA, τJp, learned coefficients, report."""
