"""Home: what mergelab is, where it keeps its data, and the collection it opens on."""

import streamlit as st

from engine.errors import MergelabError
from engine.home import ASSETS_DIR, DataHome
from engine.pool.collection import load_collection
from ui import pages, resources

st.title(pages.heading(""))
st.write(
    "Merge fine-tuned CLIP image encoders by task arithmetic and see what each merge does: "
    "per-task accuracy, interference between tasks, and how much of a task a negation removes."
)
st.page_link(
    "views/tour.py", label="New here? Start with the Tour: six steps, one live chart each", icon=":material/school:"
)
for section, views in pages.sections().items():
    if section:
        st.markdown(f"**{section}**")
    columns = st.columns(2)
    for i, view in enumerate(v for v in views if v.url_path):
        columns[i % 2].page_link(view.file, label=f"{view.title}: {view.blurb}", icon=view.icon)
home = DataHome.from_env().ensure()
st.caption(f"Data home: `{home.root}` (set MERGELAB_HOME to move it)")
with st.expander("This server's shared results"):
    st.caption(
        "Every browser session on this server reads one cache of computed results, so a class opening the same "
        f"link causes one merge and one evaluation. Since it started, {resources.compute_cache().stats().line()}."
    )
try:
    collection = load_collection(ASSETS_DIR / "zoo")
except MergelabError as exc:
    st.info(f"The demo zoo is not built yet ({exc.problem}). Build it with `python -m engine zoo build`.")
else:
    st.subheader(f"Collection: {collection.manifest.name}")
    st.write(collection.manifest.description)
    st.dataframe(
        {
            "task": list(collection.task_names),
            "variants": [", ".join(collection.variants(t)) for t in collection.task_names],
        }
    )
