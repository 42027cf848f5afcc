"""Streamlit-side helpers shared by the views: figure builders (no st.*), state, cached resources."""
