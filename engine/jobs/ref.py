"""Which opened collection a job runs on, by value: what a job spec, the jobs table and another process can
hold instead of a live Workspace (which holds gigabytes)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import CheckpointError
from engine.workspace import Workspace


@dataclass(frozen=True)
class WorkspaceRef:
    collection: str  # the path as the user gave it (the dashboard caches workspaces by it)
    device: str = "cpu"
    choice: tuple[tuple[str, str], ...] = ()  # (task, checkpoint name) of tasks not on "standard"
    pretrained_sha256: str = ""
    checkpoints_sha256: tuple[tuple[str, str], ...] = ()  # (task, tensors_sha256) of every task, in order

    @classmethod
    def of(cls, workspace: Workspace, *, collection: str | None = None, device: str | None = None) -> WorkspaceRef:
        """The reference of an open workspace (`collection` and `device` as it was opened by, if given)."""
        choice = tuple((t, v) for t, v in workspace.variants.items() if v != "standard")
        return cls(
            collection or str(workspace.collection.root),
            device or str(workspace.matrix.T.device),
            choice,
            workspace.pretrained.tensors_sha256,
            tuple((t, workspace.collection.finetuned_sha256(t, workspace.variant_of(t))) for t in workspace.task_names),
        )

    def check(self, workspace: Workspace) -> Workspace:
        """`workspace` if it holds exactly the checkpoints this reference names, else CheckpointError."""
        found = WorkspaceRef.of(workspace, collection=self.collection, device=self.device)
        if (found.pretrained_sha256, found.checkpoints_sha256) != (self.pretrained_sha256, self.checkpoints_sha256):
            raise CheckpointError(
                self.collection,
                "holds other checkpoints than the job was asked to run on (a file changed since)",
                fix="submit the job again on the collection as it is now",
            )
        return workspace
