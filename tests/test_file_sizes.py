"""Small modules with one job: no Python file of the repository (the library, the CLI, the tests, the
benchmarks, the sample data's generator) is over 400 lines (issue 28). A file that grows past it is split by
what it does (see docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = 400


FOLDERS = ("pathweak", "pathweak_cli", "tests", "benchmarks", "sample_data")


def long_files(root: Path = REPO, folders: tuple[str, ...] = FOLDERS) -> dict[str, int]:
    """``{path: lines}`` of the ``.py`` files under ``folders`` longer than LIMIT."""
    out = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            if "_work" in path.relative_to(root).parts:  # benchmarks' scratch (git-ignored)
                continue
            n = len(path.read_text().splitlines())
            if n > LIMIT:
                out[str(path.relative_to(root))] = n
    return out


def test_no_file_over_400_lines() -> None:
    assert long_files() == {}


def test_a_long_file_is_found(tmp_path: Path) -> None:
    (tmp_path / "pathweak").mkdir()
    (tmp_path / "pathweak" / "short.py").write_text("x = 1\n" * LIMIT)
    assert long_files(tmp_path, ("pathweak",)) == {}
    (tmp_path / "pathweak" / "long.py").write_text("x = 1\n" * (LIMIT + 1))
    assert long_files(tmp_path, ("pathweak",)) == {"pathweak/long.py": LIMIT + 1}


def test_every_python_folder_is_covered() -> None:
    """A new top-level folder of Python files is not left out of the check."""
    ignored = {"runs", "build", "dist"}  # outputs and build folders, ignored by git
    top = [d for d in REPO.iterdir() if d.is_dir() and d.name[0] != "." and d.name not in ignored]
    folders = {d.name for d in top if next(d.rglob("*.py"), None) is not None}
    assert folders <= set(FOLDERS), folders - set(FOLDERS)
