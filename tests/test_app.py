from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def test_dashboard_home_opens_without_errors():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "mergelab"


def test_serve_begins_the_heavy_imports_in_a_thread_the_app_waits_for():
    """serve.py (make run) starts ui/preload.py's thread before the server: a fresh process finds torch, open_clip
    and the engine imported once it has waited for it, and app.py waits before its own imports."""
    import ast
    import subprocess
    import sys

    script = (
        "import sys, threading\n"
        "from ui.preload import PRELOAD_THREAD, start_preload, wait_for_preload\n"
        "thread = start_preload()\n"
        "wait_for_preload()\n"
        "assert not thread.is_alive() and thread.name == PRELOAD_THREAD\n"
        "assert {'open_clip', 'engine.workspace', 'ui.state'} <= set(sys.modules)\n"
        "assert 'mergelab-zoo' in __import__('open_clip').list_models()\n"
    )
    root = Path(APP).parent
    subprocess.run([sys.executable, "-c", script], cwd=root, check=True, timeout=300)
    body = ast.parse(Path(APP).read_text()).body
    waits = next(i for i, node in enumerate(body) if "wait_for_preload()" == ast.unparse(node))
    first_ui = next(i for i, node in enumerate(body) if isinstance(node, ast.ImportFrom) and node.module == "ui")
    assert waits < first_ui
