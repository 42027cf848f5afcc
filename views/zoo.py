"""Zoo: the pretrained model and fine-tuned checkpoints of a collection, sample images, task similarity."""

import streamlit as st

from engine.data.tasks import example_images
from engine.errors import MergelabError
from ui import figures, messages, pages, resources, tables
from ui.state import current_collection, sidebar_workspace

st.header(pages.heading("zoo"))


def stored_variants_section(collection: str) -> None:
    """The build report's comparison of fine-tuning variants: stored numbers only, so it is drawn before the
    workspace (tasks, heads, checkpoints) opens and the page shows its first chart at once."""
    try:
        report = resources.build_report(collection)
    except MergelabError:
        return  # sidebar_workspace below shows the collection's error
    if not report or not report.get("variants"):
        return
    st.subheader("Three ways to fine-tune")
    variants = figures.variants_table(report["variants"])
    st.dataframe(
        variants,
        hide_index=True,
        column_config=tables.fitted_columns(
            variants,
            {
                "fine-tuned": st.column_config.NumberColumn("fine-tuned (test)", format="percent"),
                "merge at best λ": st.column_config.NumberColumn("merge at best λ (test)", format="percent"),
                "best λ (val)": st.column_config.NumberColumn("best λ (chosen on val)", format="%g"),
                "merge at λ = 1": st.column_config.NumberColumn("merge at λ = 1 (test)", format="percent"),
                "mean off-diagonal τJp": st.column_config.NumberColumn(format="%.2f"),
            },
        ),
    )
    st.plotly_chart(figures.variant_curves(report["variants"]), key="variant_curves")
    st.caption(
        "The curve: mean accuracy on val of the merge of every task, θ₀ + λ·Στ, against λ; the best λ is chosen "
        "on it. The table: mean accuracy on test, at that λ and at λ = 1 (both stored at build time). Standard "
        "fine-tunes interfere: their merge peaks at a small λ and falls apart at λ = 1. Linearized fine-tuning "
        "alone does not fix that. With the τJp penalty the task vectors barely move other tasks' embeddings, so "
        "adding all of them at λ = 1 works (Yoshida et al., ICLR 2025). Choose a variant under 'Fine-tuned "
        "checkpoints' to merge it."
    )


stored_variants_section(current_collection())
collection, choice, ws = sidebar_workspace()

manifest = ws.collection.manifest
st.subheader(manifest.name)
st.write(manifest.description)
st.caption(resources.pool_summary(collection))
for entry in ws.collection.skipped:  # a discovered pool's entries left out (confirmed), and why
    st.warning(str(entry))
zero_shot, finetuned = ws.zero_shot("interactive"), ws.finetuned("interactive")
pool = resources.pool_checkpoints(collection)
checkpoints = figures.checkpoint_table(
    pool[0],
    pool[1:],
    in_use={t: ws.variant_of(t) for t in ws.task_names},
    zero_shot=zero_shot,
    finetuned=finetuned,
    sizes={info.path: resources.checkpoint_size(info.path) for info in pool},
)
st.dataframe(
    checkpoints,
    hide_index=True,
    column_config=tables.fitted_columns(
        checkpoints,
        {
            "task": st.column_config.TextColumn(width="medium"),
            "checkpoint": st.column_config.TextColumn(
                width="medium", help="its name; its kind in brackets if different"
            ),
            "in use": st.column_config.CheckboxColumn(width="small"),
            "architecture": st.column_config.TextColumn(width="medium"),
            "size": st.column_config.NumberColumn("size (kB)", format="%d", width="small"),
            "zero-shot": st.column_config.TextColumn(width="small"),
            "fine-tuned": st.column_config.TextColumn(width="small", help="for the checkpoints in use"),
        },
    ),
)
st.caption(
    "Accuracy on the interactive split (a fixed subset of val): zero-shot = the pretrained model with "
    "heads from class-name prompts; fine-tuned = each task's own image tower with the same head, shown for "
    "the checkpoints in use (choose them under 'Fine-tuned checkpoints' in the sidebar; — for the others). "
    "Kinds linearized and tau_jp are linearized models, evaluated as f(x; θ₀) + J·(θ − θ₀)."
)

if any(info.format != "mergelab" for info in pool):
    with st.expander("Convert this pool to safetensors"):
        st.write(
            "Foreign files (pickles, Hugging Face folders) are re-parsed on every open. Converting writes each "
            "checkpoint once as safetensors with a sidecar (content hash, architecture, QuickGELU, variant), so "
            "later opens read weights only."
        )
        target = st.text_input(
            "new collection folder", value=resources.default_conversion_folder(collection), key="convert_to"
        )
        if st.button("Convert", key="convert"):
            bar = st.progress(0.0, text="Converting…")
            try:
                written = resources.convert_pool(
                    collection,
                    target,
                    progress=lambda done, total, label: bar.progress(
                        done / total, text=f"Wrote {done} of {total} checkpoints ({label})"
                    ),
                )
            except MergelabError as exc:
                st.error(messages.shown(exc))
            else:
                st.success(f"Wrote {written}. Open it by typing that path into 'Collection folder'.")

st.subheader("Sample images")
for task in ws.task_names:
    st.markdown(f"**{task}** · classes: {', '.join(ws.suite.tasks[task].class_names)}")
    images, labels = example_images(ws.suite.tasks[task], split="val", count=8)
    st.image(images, caption=labels, width=64)

st.subheader("How similar are the task vectors?")
similarity = resources.task_similarity(collection, resources.device_name(), choice)
st.plotly_chart(figures.similarity_heatmap(similarity, ws.task_names), key="similarity", theme=None)
st.caption(
    "cos(τᵢ, τⱼ) = τᵢ·τⱼ / (‖τᵢ‖ ‖τⱼ‖). Near 0: the tasks moved the weights in unrelated directions; "
    "large values flag tasks that will interact when their vectors are added."
)
