"""Forgetting: subtract a task vector and watch the target task fall while the others hold."""
import streamlit as st

from engine.forgetting import negate
from engine.evaluate import evaluate
from ui import figures, resources
from ui.state import collection_picker

st.header("Forget a task")
collection = collection_picker()
ws = resources.workspace_or_stop(collection)
st.session_state.setdefault("forget_target", ws.task_names[0])
st.session_state.setdefault("forget_alpha", 1.0)
target = st.selectbox("Task to forget", ws.task_names, key="forget_target", bind="query-params")
alpha = st.slider("α", 0.0, 2.0, step=0.05, key="forget_alpha", bind="query-params",
                  help="θ = θ₀ − α·τ_target")
st.caption("Method: task arithmetic negation. STA's importance-masked forgetting arrives with the STA issue.")

result = evaluate(negate(ws, target, alpha), ws.suite, "interactive")
others = [t for t in ws.task_names if t != target]
control = sum(result.accuracy[t] for t in others) / len(others)
a, b = st.columns(2)
a.metric(f"target: {target}", f"{result.accuracy[target]:.1%}",
         delta=f"{result.accuracy[target] - ws.zero_shot('interactive')[target]:+.1%} vs pretrained",
         delta_color="inverse")
b.metric("control (mean of the others)", f"{control:.1%}")

curve = resources.forgetting_curve(collection, resources.device_name(), target)
st.plotly_chart(figures.forgetting_chart(curve, alpha=alpha), key="forgetting_chart")
st.caption("The papers' protocol: choose the α that brings the target lowest while the control accuracy stays "
           "at or above 95% of the pretrained model's (dotted line). Here on the interactive split; "
           "reports use val to choose and test to report.")
chosen = curve.chosen_index()
st.dataframe([{"method": "task arithmetic negation", "chosen α": curve.alphas[chosen],
               "target": curve.target_accuracy[chosen], "control": curve.control_accuracy[chosen],
               "pretrained target": curve.target_accuracy[0], "pretrained control": curve.pretrained_control}],
             column_config={k: st.column_config.NumberColumn(format="percent")
                            for k in ("target", "control", "pretrained target", "pretrained control")})
