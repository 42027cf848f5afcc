"""Serve the dashboard: `python serve.py [streamlit options]`, what `make run` does.

The same server as `streamlit run app.py [options]`, with the dashboard's heavy imports (torch, open_clip, the
engine) started in a thread before the server, so the first visitor does not wait for them (ui/preload.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ui.preload import start_preload

APP = Path(__file__).resolve().parent / "app.py"


def main(options: list[str]) -> None:
    start_preload()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(APP), *options]
    cli.main()


if __name__ == "__main__":
    main(sys.argv[1:])
