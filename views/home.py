"""Home: what mergelab is, where it keeps its data, and the collection it opens on."""
import streamlit as st

from engine.collection import load_collection
from engine.errors import MergelabError
from engine.home import ASSETS_DIR, DataHome

st.title("mergelab")
st.write("Merge fine-tuned CLIP image encoders by task arithmetic and see what each merge does: "
         "per-task accuracy, interference between tasks, and how learned coefficients converge.")
home = DataHome.from_env().ensure()
st.caption(f"Data home: `{home.root}`")
try:
    collection = load_collection(ASSETS_DIR / "zoo")
except MergelabError as exc:
    st.info(f"The demo zoo is not built yet ({exc.problem}). Build it with `python -m engine zoo build`.")
else:
    st.subheader(f"Collection: {collection.manifest.name}")
    st.write(collection.manifest.description)
    st.dataframe({"task": list(collection.task_names),
                  "variants": [", ".join(collection.variants(t)) for t in collection.task_names]})
