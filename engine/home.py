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
the process-wide cache of computed results may hold (engine/cache/memory.py; default 2048), and `"store"`:
how pools open (engine/store/plan.py: "auto", "memory", "built", "built-bf16" or "factored"). The file is
checked whole (`HomeConfig`) whoever reads it, the command line included (`DataHome.ensure`).
Files are opened with `open_regular`: a named pipe, socket or device is refused by name, never opened.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from engine.errors import MergelabError, PathNotAllowedError, SchemaError, SpecialFileError

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
SUBFOLDERS = ("runs", "cache", "checkpoints", "exports")
# how a pool opens: the plan's pick, or one backing ("factored": LoRA adapters kept as their factors, full checkpoints
# read lazily; engine/store/plan.py)
STORE_CHOICES = ("auto", "memory", "built", "built-bf16", "factored")
# Our choice: two jobs at once on the CPU by default (a sweep need not wait behind a fine-tune); a lone job
# still gets every idle core (engine/jobs/runner.job_threads splits the cores among the running jobs).
JOB_SLOTS = 2
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
    except SpecialFileError as exc:
        raise error(path, exc.problem, fix=fix) from exc
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
    return open_regular(path)


SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def special_kind(path: Path) -> str | None:
    """What `path` is (symlinks followed) when it is a named pipe, socket or device, else None (a regular file, a
    folder, or nothing there). A stat, never an open: opening a pipe to read blocks until something writes."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing, a dangling link, a name with NUL: the caller's own error
        return None
    return _kind_of(mode)


def _kind_of(mode: int) -> str | None:
    return next((kind for test, kind in SPECIAL_KINDS if test(mode)), None)


def refuse_special(path: Path, *, fix: str, shown: str | Path | None = None) -> None:
    """A SpecialFileError naming `shown` (default `path`) and what it is, when `path` is a pipe, socket or device."""
    kind = special_kind(path)
    if kind is not None:
        raise SpecialFileError(shown or path, f"is {kind}, not a regular file", fix=fix)


def open_regular(path: Path, *, shown: str | Path | None = None) -> BinaryIO:
    """`path` opened for reading, refused (SpecialFileError) when it is a pipe, socket or device. It is checked by
    a stat first, then opened without blocking and checked again on the descriptor, so a pipe swapped in between
    is refused too instead of blocking the reader. A folder raises IsADirectoryError, as `open` does."""
    fix = "point at the file itself: mergelab reads regular files only"
    refuse_special(path, fix=fix, shown=shown)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        raise SpecialFileError(shown or path, f"is {_kind_of(mode) or 'not a file'}, not a regular file", fix=fix)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


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
        handle = open_regular(path, shown=shown)
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


def _env_count(name: str) -> int | None:
    """A whole number ≥ 1 from the environment variable `name` (None when unset or empty)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise SchemaError(name, f"is {raw!r}", fix=f"set {name} to a whole number ≥ 1, or unset it")
    return int(raw)


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
class HomeConfig:
    """The data home's config.json: `allowed_roots` (folders the dashboard may read besides the data home and
    assets/) and `cache_budget_mb` (None: the caller's default). Unknown fields are refused, so a typo such
    as "allowed_root" is an error, not a setting silently ignored."""

    allowed_roots: tuple[Path, ...] = ()
    cache_budget_mb: float | None = None
    store: str = "auto"
    job_slots: int | None = None  # jobs the dashboard runs at once on the CPU (None: JOB_SLOTS)
    job_threads: int | None = None  # torch threads per job (None: its share of the idle cores)

    @staticmethod
    def parse(config: object, file: Path) -> HomeConfig:
        if not isinstance(config, dict):
            raise SchemaError(file, "is not a JSON object", fix='write {"allowed_roots": [...]}')
        known = ("allowed_roots", "cache_budget_mb", "job_slots", "job_threads", "store")
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise SchemaError(file, f"has the unknown field {unknown[0]!r}", fix=f"use only {', '.join(known)}")
        roots = config.get("allowed_roots", [])
        if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
            raise SchemaError(
                file, "allowed_roots is not a list of strings", fix='write {"allowed_roots": ["/abs/folder"]}'
            )
        mb = config.get("cache_budget_mb")
        if mb is not None and (isinstance(mb, bool) or not isinstance(mb, (int, float)) or not mb >= 0):
            raise SchemaError(file, f"cache_budget_mb is {mb!r}", fix="write a number of MB ≥ 0")
        store = config.get("store", "auto")
        if store not in STORE_CHOICES:
            raise SchemaError(file, f"store is {store!r}", fix=f"write one of {', '.join(STORE_CHOICES)}")
        counts = {name: config.get(name) for name in ("job_slots", "job_threads")}
        for name, n in counts.items():
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise SchemaError(file, f"{name} is {n!r}", fix="write a whole number ≥ 1, or leave it out")
        return HomeConfig(tuple(Path(r).expanduser().resolve() for r in roots), mb, store, **counts)


@dataclass(frozen=True)
class DataHome:
    """A resolved data home; `ensure()` creates its subfolders."""

    root: Path

    @classmethod
    def from_env(cls) -> DataHome:
        raw = os.environ.get("MERGELAB_HOME") or str(Path.home() / ".mergelab")
        return cls(Path(raw).expanduser().resolve())

    def ensure(self) -> DataHome:
        """Create the subfolders, and check config.json: every entry point (the command line's too, whose
        paths no root confines) refuses a malformed config before it does anything."""
        for name in SUBFOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.config()
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
        return (self.root, ASSETS_DIR.resolve(), *self.config().allowed_roots)

    def cache_budget_bytes(self, *, default_mb: int = 2048) -> int:
        """`cache_budget_mb` from config.json (MB of computed results kept in memory), else `default_mb`."""
        mb = self.config().cache_budget_mb
        return int((default_mb if mb is None else mb) * (1 << 20))

    def store_choice(self) -> str:
        """`store` from config.json: how pools open ("auto", the memory plan's pick, or "memory", "built",
        "built-bf16", "factored"; engine/store/plan.py), else "auto"."""
        return self.config().store

    @property
    def stores(self) -> Path:
        """Built task stores (engine/store/built.py): derived from the checkpoints, rebuilt when missing."""
        return self.cache / "stores"

    def job_slots(self) -> int:
        """How many jobs the dashboard runs at once on the CPU: MERGELAB_JOB_SLOTS, else config.json's
        `job_slots`, else JOB_SLOTS (a GPU runs one job per device: engine/jobs/runner.py)."""
        return _env_count("MERGELAB_JOB_SLOTS") or self.config().job_slots or JOB_SLOTS

    def job_threads(self) -> int | None:
        """Torch threads per job: MERGELAB_JOB_THREADS, else config.json's `job_threads`, else None (each job
        its share of the idle cores)."""
        return _env_count("MERGELAB_JOB_THREADS") or self.config().job_threads

    def config(self) -> HomeConfig:
        """config.json (empty when absent), every field checked, whichever field the caller wants: the
        dashboard, the command line and the job runners refuse the same file with the same message."""
        if not self.config_file.exists():
            return HomeConfig()
        text = read_document(self.config_file, fix="write it as a small UTF-8 JSON object")
        try:
            config = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
            raise SchemaError(
                self.config_file, f"unreadable config ({nesting(exc)})", fix="write it as a JSON object"
            ) from exc
        return HomeConfig.parse(config, self.config_file)

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
