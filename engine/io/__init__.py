"""Files in and out: checkpoints with their sidecars, verified hashes, atomic writes, and formats/."""
