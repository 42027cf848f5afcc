"""Tour: a guided lecture on the demo zoo in six steps, each with one live chart, its formula and a link to
the full page. The step is in st.session_state["tour_step"] and the URL (?step=N), so a link opens a step;
presenter mode is in the URL too (&presenter=true), so a reload in front of the class keeps it. The arrow keys
move between steps (the buttons' shortcuts; Streamlit ignores them while a slider or a text box has focus)."""

import streamlit as st

from ui import links
from ui import tour_steps as steps
from ui.state import sidebar_workspace


def _step_from_url() -> int | None:
    try:
        step = int(st.query_params.get("step", ""))
    except ValueError:
        return None
    return step if 1 <= step <= len(steps.STEPS) else None


if "tour_step" not in st.session_state or st.session_state.get("_tour_url_step") != st.query_params.get("step"):
    st.session_state["tour_step"] = _step_from_url() or st.session_state.get("tour_step", 1)


# Each step's control is a widget only while its step is shown, and Streamlit drops an unrendered widget's
# value: re-assigning it on every run keeps λ, d, ... where the audience left them when the tour comes back.
for key in (
    "tour_sim_tasks",
    "tour_lam",
    "tour_density",
    "tour_taujp_variant",
    "tour_forget_target",
    "tour_forget_method",
    "tour_objective",
):
    if key in st.session_state:
        st.session_state[key] = st.session_state[key]


def go_to(step: int) -> None:
    st.session_state["tour_step"] = min(max(step, 1), len(steps.STEPS))


step = st.session_state["tour_step"]
st.query_params["step"] = str(step)
st.session_state["_tour_url_step"] = str(step)  # the URL now says this step: only a changed URL moves the tour

top, toggle = st.columns([4, 1])
top.header(f"Tour · step {step} of {len(steps.STEPS)}: {steps.STEPS[step - 1][0]}")
PRESENTER = links.flag("presenter", "tour_presenter")
links.restore([PRESENTER], scope="tour")
presenter = toggle.toggle("Presenter mode", key="tour_presenter", help="larger fonts and figures for a projector")
links.publish([PRESENTER], owned=links.owned_by([PRESENTER]))
if presenter:
    st.markdown(
        # the lecture's text only: a larger root font would also truncate the sidebar's and the widgets' labels
        "<style>[data-testid='stMain'] [data-testid='stMarkdown'] :is(p, li) "
        "{font-size: 1.75rem !important;} .katex {font-size: 1.6em !important;}</style>",
        unsafe_allow_html=True,
    )
collection, choice, ws = sidebar_workspace()
steps.STEPS[step - 1][1](steps.Tour(collection, choice, ws, presenter))

previous, _, following = st.columns([1, 4, 1])
last = len(steps.STEPS)
previous.button("Previous", key="tour_previous", on_click=go_to, args=(step - 1,), disabled=step == 1, shortcut="Left")
following.button("Next", key="tour_next", on_click=go_to, args=(step + 1,), disabled=step == last, shortcut="Right")
st.caption(f"Share this step: `tour?step={step}{'&presenter=true' if presenter else ''}`. Keys: ← and → move.")
