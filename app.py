"""mergelab dashboard: navigation only. Views live in views/ (not pages/: a deep link to a fresh
server would otherwise run the page without this file, see shared/research/install.md)."""
import streamlit as st

st.set_page_config(page_title="mergelab", page_icon="🧪", layout="wide")
st.navigation([st.Page("views/home.py", title="Home", icon="🏠", default=True)]).run()
