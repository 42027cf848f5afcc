"""Task datasets: packed files, image folders, CSVs, Hugging Face and release files, the suites, and the zoo's tasks.

`load_task` and `save_task` are the names the README documents; they live in engine/data/loading.py
and engine/data/tasks.py.
"""

from engine.data.loading import load_task
from engine.data.tasks import save_task

__all__ = ["load_task", "save_task"]
