"""Zoo: the pretrained model and fine-tuned checkpoints of a collection, sample images, task similarity."""

import streamlit as st

from engine.data.tasks import example_images
from engine.errors import MergelabError
from ui import figures, resources
from ui.state import sidebar_workspace

st.header("Checkpoints and tasks")
collection, choice, ws = sidebar_workspace()

manifest = ws.collection.manifest
st.subheader(manifest.name)
st.write(manifest.description)
for warning in ws.collection.warnings:  # a discovered pool's folders left out, and why
    st.warning(warning)
zero_shot, finetuned = ws.zero_shot("interactive"), ws.finetuned("interactive")
pool = {(info.task, info.name): info for info in resources.pool_checkpoints(collection)}
towers = {"clip": "both towers", "visual": "image tower"}
pre = pool[(None, "pretrained")]
rows = [
    {
        "task": f"(pretrained, {towers[pre.tower]})",
        "checkpoint": "pretrained",
        "kind": "pretrained",
        "in use": True,
        "format": pre.format,
        "architecture": pre.architecture + ("-quickgelu" if pre.quick_gelu else ""),
        "size (kB)": resources.checkpoint_size(pre.path) // 1000,
        "zero-shot": sum(zero_shot.values()) / len(zero_shot),
        "fine-tuned": None,
    }
]
for task in ws.task_names:
    for variant in ws.collection.variants(task):
        info = pool[(task, variant)]
        in_use = variant == ws.variant_of(task)
        rows.append(
            {
                "task": task,
                "checkpoint": variant,
                "kind": info.variant,
                "in use": in_use,
                "format": info.format,
                "architecture": info.architecture + ("-quickgelu" if info.quick_gelu else ""),
                "size (kB)": resources.checkpoint_size(info.path) // 1000,
                "zero-shot": zero_shot[task],
                "fine-tuned": finetuned[task] if in_use else None,
            }
        )
st.dataframe(
    rows,
    column_config={
        "zero-shot": st.column_config.NumberColumn(format="percent"),
        "fine-tuned": st.column_config.NumberColumn(format="percent"),
    },
)
st.caption(
    "Accuracy on the interactive split (a fixed subset of val): zero-shot = the pretrained model with "
    "heads from class-name prompts; fine-tuned = each task's own image tower with the same head, shown for "
    "the checkpoints in use (choose them under 'Fine-tuned checkpoints' in the sidebar). Kinds linearized and "
    "tau_jp are linearized models, evaluated as f(x; θ₀) + J·(θ − θ₀)."
)

if any(info.format != "mergelab" for info in pool.values()):
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
                st.error(str(exc))
            else:
                st.success(f"Wrote {written}. Open it by typing that path into 'Collection folder'.")

report = resources.build_report(collection)
if report and report.get("variants"):
    st.subheader("Three ways to fine-tune")
    st.dataframe(
        figures.variants_table(report["variants"]),
        column_config={
            k: st.column_config.NumberColumn(format="percent")
            for k in ("fine-tuned", "merge at best λ", "merge at λ = 1")
        },
    )
    st.plotly_chart(figures.variant_curves(report["variants"]), key="variant_curves")
    st.caption(
        "The table: test accuracy averaged over the tasks; the curve: mean val accuracy, on which λ is chosen "
        "(both stored at build time). Standard fine-tunes interfere: their "
        "merge peaks at a small λ and falls apart at λ = 1. Linearized fine-tuning alone does not fix that. "
        "With the τJp penalty the task vectors barely move other tasks' embeddings, so adding all of them at "
        "λ = 1 works (Yoshida et al., ICLR 2025). Choose a variant under 'Fine-tuned checkpoints' to merge it."
    )

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
