"""Task datasets: packed files, image folders and CSVs, the standard tasks, and the zoo's generated tasks.

`load_task` and `save_task` are the names the README documents; they live in engine/data/loading.py
and engine/data/tasks.py.
"""

from engine.data.loading import load_task
from engine.data.tasks import save_task

__all__ = ["load_task", "save_task"]
