"""mergelab's engine: checkpoints, flat task vectors, merge methods and evaluation. No Streamlit here."""
