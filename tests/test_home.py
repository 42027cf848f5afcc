"""The data home's size per folder, and clearing its caches without touching what the user made."""

from engine.cli import main
from engine.home import DataHome


def _fill(home: DataHome) -> None:
    for folder, name in (("cache/heads", "h.safetensors"), ("cache/tasks", "t.safetensors"), ("exports", "m.st")):
        (home.root / folder).mkdir(parents=True, exist_ok=True)
        (home.root / folder / name).write_bytes(b"x" * 1000)
    (home.checkpoints / "finetuned").mkdir(parents=True, exist_ok=True)
    (home.checkpoints / "finetuned" / "mine.safetensors").write_bytes(b"y" * 500)
    (home.runs / "runs.sqlite3").write_bytes(b"z" * 200)
    (home.cache / "tasks" / ".t.safetensors.1-2.abc.part").write_bytes(b"w" * 7)  # a write in progress


def test_usage_and_clearing_the_caches_keep_exports_checkpoints_and_the_run_log(data_home):
    home = DataHome.from_env().ensure()
    _fill(home)
    usage = {f.name: (f.files, f.bytes) for f in home.usage()}
    assert usage == {"runs": (1, 200), "cache": (3, 2007), "checkpoints": (1, 500), "exports": (1, 1000)}
    freed = home.clear_caches()
    assert (freed.files, freed.bytes) == (2, 2000)
    after = {f.name: (f.files, f.bytes) for f in home.usage()}
    assert after == {**usage, "cache": (1, 7)}  # only the in-progress temporary is left in cache/
    assert home.cache.is_dir() and not (home.cache / "heads").exists()


def test_cli_home_prints_the_sizes_and_clears_on_request(data_home, capsys):
    home = DataHome.from_env().ensure()
    _fill(home)
    assert main(["home"]) == 0
    out = capsys.readouterr().out
    assert str(home.root) in out and "cache" in out and "3 files" in out
    assert main(["home", "--clear-caches"]) == 0
    out = capsys.readouterr().out
    assert "cleared 2 cached files" in out and (home.exports / "m.st").is_file()
