"""Zoo: the pretrained model and fine-tuned checkpoints of a collection, sample images, task similarity."""
import streamlit as st

from engine.data import example_images
from ui import figures, resources
from ui.state import sidebar_workspace

st.header("Checkpoints and tasks")
collection, choice, ws = sidebar_workspace()

manifest = ws.collection.manifest
st.subheader(manifest.name)
st.write(manifest.description)
zero_shot, finetuned = ws.zero_shot("interactive"), ws.finetuned("interactive")
rows = [{"task": "(pretrained, both towers)", "checkpoint": "pretrained", "kind": "pretrained", "in use": True,
         "architecture": ws.pretrained.meta.architecture, "size (kB)": resources.checkpoint_size(ws.pretrained.path) // 1000,
         "zero-shot": sum(zero_shot.values()) / len(zero_shot), "fine-tuned": None}]
for task in ws.task_names:
    for variant in ws.collection.variants(task):
        path = ws.collection.path(ws.collection.manifest.tasks[task].checkpoints[variant])
        in_use = variant == ws.variant_of(task)
        rows.append({"task": task, "checkpoint": variant, "kind": ws.collection.checkpoint_meta(task, variant).variant,
                     "in use": in_use, "architecture": ws.pretrained.meta.architecture,
                     "size (kB)": resources.checkpoint_size(path) // 1000,
                     "zero-shot": zero_shot[task], "fine-tuned": finetuned[task] if in_use else None})
st.dataframe(rows, column_config={"zero-shot": st.column_config.NumberColumn(format="percent"),
                                  "fine-tuned": st.column_config.NumberColumn(format="percent")})
st.caption("Accuracy on the interactive split (a fixed subset of val): zero-shot = the pretrained model with "
           "heads from class-name prompts; fine-tuned = each task's own image tower with the same head, shown for "
           "the checkpoints in use (choose them under 'Fine-tuned checkpoints' in the sidebar). Kinds linearized and "
           "tau_jp are linearized models, evaluated as f(x; θ₀) + J·(θ − θ₀).")

report = resources.build_report(collection)
if report and report.get("variants"):
    st.subheader("Three ways to fine-tune")
    st.dataframe(figures.variants_table(report["variants"]),
                 column_config={k: st.column_config.NumberColumn(format="percent")
                                for k in ("fine-tuned", "merge at best λ", "merge at λ = 1")})
    st.plotly_chart(figures.variant_curves(report["variants"]), key="variant_curves")
    st.caption("Test accuracy averaged over the tasks, stored at build time. Standard fine-tunes interfere: their "
               "merge peaks at a small λ and falls apart at λ = 1. Linearized fine-tuning alone does not fix that. "
               "With the τJp penalty the task vectors barely move other tasks' embeddings, so adding all of them at "
               "λ = 1 works (Yoshida et al., ICLR 2025). Choose a variant under 'Fine-tuned checkpoints' to merge it.")

st.subheader("Sample images")
for task in ws.task_names:
    st.markdown(f"**{task}** · classes: {', '.join(ws.suite.tasks[task].class_names)}")
    images, labels = example_images(ws.suite.tasks[task], split="val", count=8)
    st.image(images, caption=labels, width=64)

st.subheader("How similar are the task vectors?")
similarity = resources.task_similarity(collection, resources.device_name(), choice)
st.plotly_chart(figures.similarity_heatmap(similarity, ws.task_names), key="similarity", theme=None)
st.caption("cos(τᵢ, τⱼ) = τᵢ·τⱼ / (‖τᵢ‖ ‖τⱼ‖). Near 0: the tasks moved the weights in unrelated directions; "
           "large values flag tasks that will interact when their vectors are added.")
