"""Home: what mergelab is, where it keeps its data, and the collection it opens on."""

import streamlit as st

from engine.errors import MergelabError
from engine.home import ASSETS_DIR, DataHome
from engine.pool.collection import load_collection

st.title("mergelab")
st.write(
    "Merge fine-tuned CLIP image encoders by task arithmetic and see what each merge does: "
    "per-task accuracy, interference between tasks, and how much of a task a negation removes."
)
left, right = st.columns(2)
with left:
    st.page_link(
        "views/zoo.py", label="Zoo: checkpoints, sample images, task similarity", icon=":material/inventory_2:"
    )
    st.page_link("views/merge.py", label="Merge: pick tasks, move λ, see every task", icon=":material/merge:")
with right:
    st.page_link("views/forgetting.py", label="Forgetting: subtract a task vector", icon=":material/remove_circle:")
    st.page_link(
        "views/interference.py", label="Interference: τJp between every pair of tasks", icon=":material/grid_on:"
    )
    st.page_link(
        "views/sta.py", label="STA importance: what each task's loss is sensitive to", icon=":material/filter_alt:"
    )
    st.page_link("views/jobs.py", label="Jobs & runs: background work and the run log", icon=":material/monitoring:")
home = DataHome.from_env().ensure()
st.caption(f"Data home: `{home.root}` (set MERGELAB_HOME to move it)")
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
