"""mergelab dashboard: navigation and the sidebar pickers every view shares.

Views live in views/, not pages/: with a pages/ folder, Streamlit runs a deep-linked page without this file
when it is a fresh server's first request (tests/e2e checks deep links)."""

import streamlit as st

from ui import links, owner
from ui.state import sidebar_pickers

st.set_page_config(page_title="mergelab", page_icon=":material/science:", layout="wide")
owner.remember_browser()  # jobs stay this browser's across reloads and tabs (ui/owner.py)
pages = st.navigation(
    {
        "": [st.Page("views/home.py", title="Home", icon=":material/home:", default=True)],
        "Explore": [
            st.Page("views/tour.py", title="Tour", icon=":material/school:", url_path="tour"),
            st.Page("views/zoo.py", title="Zoo", icon=":material/inventory_2:", url_path="zoo"),
            st.Page("views/merge.py", title="Merge", icon=":material/merge:", url_path="merge"),
            st.Page("views/compare.py", title="Compare methods", icon=":material/leaderboard:", url_path="compare"),
            st.Page("views/landscape.py", title="λ landscape", icon=":material/landscape:", url_path="landscape"),
            st.Page("views/forgetting.py", title="Forgetting", icon=":material/remove_circle:", url_path="forgetting"),
            st.Page("views/sta.py", title="STA importance", icon=":material/filter_alt:", url_path="sta"),
            st.Page(
                "views/interference.py", title="Interference (τJp)", icon=":material/grid_on:", url_path="interference"
            ),
            st.Page(
                "views/subspaces.py", title="Subspaces", icon=":material/stacked_line_chart:", url_path="subspaces"
            ),
        ],
        "Train": [
            st.Page("views/finetune.py", title="Fine-tune", icon=":material/model_training:", url_path="finetune"),
            st.Page("views/learned.py", title="aTLAS & DV-BASI", icon=":material/tune:", url_path="learned"),
        ],
        "Track": [
            st.Page("views/jobs.py", title="Jobs & runs", icon=":material/monitoring:", url_path="jobs"),
            st.Page("views/sweeps.py", title="Sweeps", icon=":material/scatter_plot:", url_path="sweeps"),
        ],
    },
    expanded=True,  # 14 pages: collapsed past twelve, "Jobs & runs" would hide behind "View more"
)
links.begin_run(pages.url_path)  # the URL is read on a page's first run only (ui/links.py)
sidebar_pickers()  # here, not in the views: the entry script's widgets survive page switches
pages.run()
