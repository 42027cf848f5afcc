"""The one way a user's collection is opened: by the dashboard, the command line and recipes alike.

What differs between them is only the `PathPolicy` (engine/home.py): the dashboard confines every path
to the allowed roots, the manifest's own references included (a manifest must not reach `../../etc`),
and so does every file read through the collection afterwards: CSV rows, images in folders (symlinks
followed), the files of a checkpoint folder and its sidecar; the command line trusts the shell user's
paths. Either way the user's fine-tunes of the pretrained model (made by fine-tune jobs into the data
home) join the collection, and files whose hashes were already checked and have not changed since are
not hashed again.
"""

from __future__ import annotations

from pathlib import Path

from engine.home import DataHome, PathPolicy
from engine.pool.collection import Collection, load_collection


def open_for_user(raw: str | Path, *, home: DataHome, policy: PathPolicy, finetunes: bool = True) -> Collection:
    """The collection or pool at `raw` under `policy`, with remembered hash checks and (unless `finetunes` is
    off, as when converting a pool as it is) the user's fine-tunes of its pretrained model."""
    collection = load_collection(policy.resolve(raw), policy=policy)
    collection.referenced_paths()  # each checked now: a manifest naming ../../etc is refused as it opens
    if finetunes:
        collection = collection.with_finetunes(home.finetunes)
    return collection.with_verified(home.cache / "verified")
