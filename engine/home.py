"""The data home: one folder for everything mergelab writes, and the policy for paths users type.

`MERGELAB_HOME` (default `~/.mergelab`) holds `runs/` (the run log), `cache/` (heads and other
derived tensors, keyed by checkpoint sha256), `checkpoints/` (user checkpoints) and `exports/`.
The shipped zoo under `assets/` is read-only.
Paths users give are read under a `PathPolicy`. The dashboard's (`DataHome.dashboard_policy`) is a
security boundary, since a shared server's remote users type them: relative paths resolve against the
data home, and every path must resolve (symlinks followed) under the data home, `assets/`, or a root
listed in `<home>/config.json` as `{"allowed_roots": ["/data/checkpoints", ...]}`. The command line's
(`DataHome.shell_policy`) trusts the shell user's own paths and resolves relative ones against the
current directory, as any command-line tool does. The same file may set `"cache_budget_mb"`: the memory
the process-wide cache of computed results may hold (engine/cache/memory.py; default 2048), and `"store"`: how
pools open (engine/store/plan.py: "auto", "memory", "built" or "built-bf16").
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from engine.errors import MergelabError, PathNotAllowedError, SchemaError

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
SUBFOLDERS = ("runs", "cache", "checkpoints", "exports")
STORE_CHOICES = ("auto", "memory", "built", "built-bf16")  # how a pool opens: the plan's pick, or one backing
# Manifests, recipes, sidecars, task JSON and config.json are a few kB (a sidecar listing 1000 class names and a
# recipe ~50 kB): a larger one is a mistake or an attack, and reading it whole would cost its size several times.
MAX_DOCUMENT_BYTES = 16 * 2**20


def read_document(
    path: Path,
    *,
    fix: str,
    error: type[MergelabError] = SchemaError,
    opener: Callable[[Path], BinaryIO] | None = None,
    limit: int = MAX_DOCUMENT_BYTES,
) -> str:
    """The UTF-8 text of a small document a user gives (a manifest, recipe, sidecar, config), read through
    `opener` (a PathPolicy's open_file; default: open). Unreadable, larger than `limit` (nothing beyond it is
    read) or not UTF-8, it is an `error` naming `path`, with `fix` as its fix."""
    try:
        with (opener or _open_binary)(Path(path)) as handle:
            data = handle.read(limit + 1)
    except IsADirectoryError as exc:
        raise error(path, "is a folder, not a file", fix=fix) from exc
    except OSError as exc:
        raise error(path, f"cannot be read ({exc.strerror or exc})", fix=fix) from exc
    if len(data) > limit:
        raise error(path, f"is larger than {limit // 2**20} MiB, far more than such a file holds", fix=fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(path, f"is not UTF-8 text ({exc.reason} at byte {exc.start})", fix=fix) from exc


def nesting(exc: Exception) -> str:
    """How a parse error reads in a message: a RecursionError (JSON or YAML nested thousands deep) says so."""
    return "nested too deep to parse" if isinstance(exc, RecursionError) else str(exc)


def _open_binary(path: Path) -> BinaryIO:
    return open(path, "rb")  # noqa: SIM115 (the caller closes it)


@dataclass(frozen=True)
class PathPolicy:
    """How a user's paths are read: relative ones against `base`; with `roots`, each must resolve under one
    of them (`config_file` is where more roots are listed); without, every path is trusted."""

    base: Path
    roots: tuple[Path, ...] | None = None
    config_file: Path | None = None

    @property
    def confined(self) -> bool:
        return self.roots is not None

    @staticmethod
    def trust_all() -> PathPolicy:
        """No roots: what a library caller (or the command line) gets when it passes no policy."""
        return PathPolicy(Path.cwd())

    def resolve(self, raw: str | Path) -> Path:
        """The absolute, symlink-resolved path of `raw`, refused when it lies outside the roots."""
        path = Path(raw).expanduser()
        resolved = (path if path.is_absolute() else self.base / path).resolve()
        if not self.allows(resolved):
            raise self._outside(resolved)
        return resolved

    def allows(self, resolved: Path) -> bool:
        return self.roots is None or any(resolved.is_relative_to(root) for root in self.roots)

    def check(self, path: Path, *, shown: str | Path | None = None) -> Path:
        """`path` (a file the engine is about to read on a user's behalf: a CSV row, an image in a folder, a
        file of a checkpoint folder) resolved, symlinks followed, and refused outside the roots. `shown` is
        how the error names it (a CSV's row, say); it is the same whether or not the path exists."""
        resolved = Path(path).resolve()
        if not self.allows(resolved):
            raise self._outside(shown or path)
        return resolved

    def open_file(self, path: Path, *, shown: str | Path | None = None) -> BinaryIO:
        """`path` opened for reading, with the real path of the opened descriptor checked against the roots:
        a symlink swapped between any earlier check and this open cannot redirect the read outside them.
        Outside the roots the error is the same whether or not the file exists."""
        self.check(path, shown=shown)  # before opening: a missing file outside must not say "does not exist"
        handle = open(path, "rb")  # noqa: SIM115 (returned open; the caller closes it)
        if self.roots is not None and not self.allows(_opened_path(handle, Path(path))):
            handle.close()
            raise self._outside(shown or path)
        return handle

    def _outside(self, shown: str | Path) -> PathNotAllowedError:
        listed = ", ".join(str(r) for r in self.roots or ())
        first = self.roots[0] if self.roots else "an allowed root"
        return PathNotAllowedError(
            shown,
            f"lies outside the allowed roots ({listed})",
            fix=f'move the file under {first} or add its folder to "allowed_roots" in {self.config_file}',
        )


def _usage(name: str, folder: Path) -> FolderUsage:
    files = size = 0
    for parent, _, names in os.walk(folder):
        for file in names:
            with contextlib.suppress(OSError):  # removed while counting
                size += (Path(parent) / file).lstat().st_size
                files += 1
    return FolderUsage(name, files, size)


def _opened_path(handle: BinaryIO, path: Path) -> Path:
    """The real path of an open file: from its descriptor on Linux, else resolved again from `path`."""
    link = Path(f"/proc/self/fd/{handle.fileno()}")
    try:
        return Path(os.readlink(link))
    except OSError:
        return path.resolve()


@dataclass(frozen=True)
class FolderUsage:
    """Files and bytes under one folder of the data home."""

    name: str
    files: int
    bytes: int


@dataclass(frozen=True)
class DataHome:
    """A resolved data home; `ensure()` creates its subfolders."""

    root: Path

    @classmethod
    def from_env(cls) -> DataHome:
        raw = os.environ.get("MERGELAB_HOME") or str(Path.home() / ".mergelab")
        return cls(Path(raw).expanduser().resolve())

    def ensure(self) -> DataHome:
        for name in SUBFOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        return self

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def finetunes(self) -> Path:
        """Fine-tunes made from the dashboard or CLI (engine/jobs/finetune.py), by pretrained sha256 and task."""
        return self.checkpoints / "finetuned"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    def usage(self) -> tuple[FolderUsage, ...]:
        """Files and bytes under each folder: runs (the run log), cache, checkpoints (fine-tunes), exports."""
        return tuple(_usage(name, self.root / name) for name in SUBFOLDERS)

    def clear_caches(self) -> FolderUsage:
        """Remove every file under cache/ (heads, decoded tasks, importance maps, τJp matrices, JVPs, merge
        parts, hash records: each is recomputed when next needed); what was removed. Exports, checkpoints and
        the run log are untouched, and so are the temporary files of writes still in progress (`*.part`)."""
        files = removed = 0
        for folder, dirs, names in os.walk(self.cache, topdown=False):  # symlinked folders are not followed
            for name in names:
                path = Path(folder) / name
                if name.endswith(".part"):
                    continue
                size = path.lstat().st_size
                path.unlink(missing_ok=True)
                files, removed = files + 1, removed + size
            for name in dirs:
                with contextlib.suppress(OSError):  # still holds a write in progress
                    (Path(folder) / name).rmdir()
        return FolderUsage("cache", files, removed)

    def allowed_roots(self) -> tuple[Path, ...]:
        """The data home, the shipped assets, and the extra roots from `config.json`."""
        return (self.root, ASSETS_DIR.resolve(), *self._configured_roots())

    def _configured_roots(self) -> tuple[Path, ...]:
        roots = self._config().get("allowed_roots", [])
        if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
            raise SchemaError(
                self.config_file,
                "allowed_roots is not a list of strings",
                fix='write {"allowed_roots": ["/abs/folder"]}',
            )
        return tuple(Path(r).expanduser().resolve() for r in roots)

    def cache_budget_bytes(self, *, default_mb: int = 2048) -> int:
        """`cache_budget_mb` from config.json (MB of computed results kept in memory), else `default_mb`."""
        mb = self._config().get("cache_budget_mb", default_mb)
        if isinstance(mb, bool) or not isinstance(mb, (int, float)) or mb < 0:
            raise SchemaError(self.config_file, f"cache_budget_mb is {mb!r}", fix="write a number of MB ≥ 0")
        return int(mb * (1 << 20))

    def store_choice(self) -> str:
        """`store` from config.json: how pools open ("auto", the memory plan's pick, or "memory", "built",
        "built-bf16"; engine/store/plan.py), else "auto"."""
        choice = self._config().get("store", "auto")
        if choice not in STORE_CHOICES:
            raise SchemaError(self.config_file, f"store is {choice!r}", fix=f"write one of {', '.join(STORE_CHOICES)}")
        return choice

    @property
    def stores(self) -> Path:
        """Built task stores (engine/store/built.py): derived from the checkpoints, rebuilt when missing."""
        return self.cache / "stores"

    def _config(self) -> dict:
        if not self.config_file.exists():
            return {}
        text = read_document(self.config_file, fix="write it as a small UTF-8 JSON object")
        try:
            config = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
            raise SchemaError(
                self.config_file, f"unreadable config ({nesting(exc)})", fix="write it as a JSON object"
            ) from exc
        if not isinstance(config, dict):
            raise SchemaError(self.config_file, "is not a JSON object", fix='write {"allowed_roots": [...]}')
        return config

    def dashboard_policy(self) -> PathPolicy:
        """Paths typed into the dashboard: relative to the data home, confined to the allowed roots."""
        return PathPolicy(self.root, self.allowed_roots(), self.config_file)

    @staticmethod
    def shell_policy(cwd: Path | None = None) -> PathPolicy:
        """Paths given on the command line (or in a recipe run from it): relative to `cwd`, all trusted."""
        return PathPolicy((cwd or Path.cwd()).resolve())

    def resolve_user_path(self, raw: str | Path) -> Path:
        """A path typed into the dashboard, resolved and checked against the allowed roots."""
        return self.dashboard_policy().resolve(raw)
