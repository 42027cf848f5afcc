"""Which opened collection a job runs on, by value: what a job spec, the jobs table and another process can
hold instead of a live Workspace (which holds gigabytes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.errors import CheckpointError
from engine.pool.collection import Collection
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

    @classmethod
    def of_selection(
        cls, collection: Collection, *, tasks: Sequence[str], variants: Mapping[str, str], device: str = "cpu"
    ) -> WorkspaceRef:
        """The reference of the workspace `Workspace.from_collection` would open for these tasks and checkpoints,
        from the sidecars alone (no tensor is read): what a Ray driver holds while its workers open the files,
        each checking the sha256 as it reads them."""
        chosen = {t: variants.get(t, "standard") for t in tasks}
        return cls(
            str(collection.root),
            device,
            tuple((t, v) for t, v in chosen.items() if v != "standard"),
            collection.pretrained_lazy().meta.tensors_sha256,
            tuple((t, collection.finetuned_sha256(t, v)) for t, v in chosen.items()),
        )

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(task for task, _ in self.checkpoints_sha256)

    def variant_of(self, task: str) -> str:
        return dict(self.choice).get(task, "standard")

    def check(self, workspace: Workspace) -> Workspace:
        """`workspace` if it holds exactly the checkpoints this reference names, else CheckpointError."""
        self.check_ref(WorkspaceRef.of(workspace, collection=self.collection, device=self.device))
        return workspace

    def check_ref(self, found: WorkspaceRef) -> None:
        """CheckpointError unless `found` (what is there now) names the same checkpoints as this reference."""
        if (found.pretrained_sha256, found.checkpoints_sha256) != (self.pretrained_sha256, self.checkpoints_sha256):
            raise CheckpointError(
                self.collection,
                "holds other checkpoints than the job was asked to run on (a file changed since)",
                fix="submit the job again on the collection as it is now",
            )
