"""The one way a user's collection is opened: by the dashboard, the command line and recipes alike.

What differs between them is only the `PathPolicy` (engine/home.py): the dashboard confines every path
to the allowed roots, the manifest's own references included (a manifest must not reach `../../etc`),
and so does every file read through the collection afterwards: CSV rows, images in folders (symlinks
followed), the files of a checkpoint folder and its sidecar; the command line trusts the shell user's
paths. Either way the user's fine-tunes of the pretrained model (made by fine-tune jobs into the data
home) join the collection, and files whose hashes were already checked and have not changed since are
not hashed again. A discovered pool with entries it cannot read (an empty or piped checkpoint, a task
folder without one) is refused naming each, unless the caller says to go on without them
(`skip_unreadable`: the command line's `--skip-unreadable`, the dashboard's confirmation).
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import CheckpointError
from engine.home import DataHome, PathPolicy
from engine.pool.collection import Collection, load_collection


def open_for_user(
    raw: str | Path, *, home: DataHome, policy: PathPolicy, finetunes: bool = True, skip_unreadable: bool = False
) -> Collection:
    """The collection or pool at `raw` under `policy`, with remembered hash checks and (unless `finetunes` is
    off, as when converting a pool as it is) the user's fine-tunes of its pretrained model. Entries discovery
    left out refuse it (CheckpointError naming each) unless `skip_unreadable`; they stay listed on
    `Collection.skipped` for the result and the run log either way."""
    collection = load_collection(policy.resolve(raw), policy=policy)
    if collection.skipped and not skip_unreadable:
        raise unreadable_entries(collection)
    collection.referenced_paths()  # each checked now: a manifest naming ../../etc is refused as it opens
    if finetunes:
        collection = collection.with_finetunes(home.finetunes)
    return collection.with_verified(home.cache / "verified")


def unreadable_entries(collection: Collection) -> CheckpointError:
    """The refusal of a pool some of whose task entries cannot be read: each named, with why."""
    tasks = sorted({s.task for s in collection.skipped} - set(collection.task_names))
    lost = f"tasks {', '.join(tasks)} would be left out" if tasks else "checkpoints of its tasks would be left out"
    return CheckpointError(
        collection.root,
        f"{lost}: " + "; ".join(f"{s.entry} {s.reason}" for s in collection.skipped),
        fix=f"{collection.skipped[0].fix}; or go on without them, explicitly: --skip-unreadable on the command "
        "line, 'Open without them' on the dashboard",
    )
