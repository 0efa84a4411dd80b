"""One way to build an output: skip it when it is current; else write it under a temporary name
(``.<name>.partial-<host>~<pid>-<start>-<rand>``), swap it into place when it is finished, and remove it
on an error; a crash's leftovers are swept by the next run (:func:`pathweak._atomic.sweep_partials`).

- :func:`current_store` answers "is it up to date?" for every store writer (tiler, volume tiler,
  image import, extract): complete, and made from the same cache key.
- :func:`begin` / :func:`commit` / :func:`discard` are the three steps, for writers whose steps run in
  different processes (the tiler); :func:`building` is the three as one ``with`` block.
- :func:`build_once` is the same for outputs that two runs may build at once: check, lock, check again,
  build (the second run waits for the first and then skips).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from .._atomic import partial_path, remove_path, swap_into_place
from .open import read_attrs

T = TypeVar("T")


def current_store(path: Path, key: str, force: bool = False) -> dict[str, Any] | None:
    """The attributes of the store at ``path`` when it is complete and was made from ``key`` (and
    ``force`` is off): the output is up to date and its build is skipped. None otherwise."""
    if force:
        return None
    attrs = read_attrs(path)
    if attrs and attrs.get("complete") and attrs.get("cache_key") == key:
        return attrs
    return None


def begin(final: Path, keep_suffix: bool = False) -> Path:
    """A fresh temporary path beside ``final`` (its folder is created)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return partial_path(final, keep_suffix)


def commit(tmp: Path, final: Path, *, store: bool = False, marker: str | None = None, what: str = "output") -> Path:
    """Finish a build: flag a store ``complete`` (``store``), then swap ``tmp`` into place. ``marker``
    refuses to replace an existing folder that lacks it (not an output of this kind)."""
    if store:
        mark_complete(tmp)
    return swap_into_place(tmp, final, marker, what)


def discard(tmp: Path | None) -> None:
    """Remove a build's temporary output (a file or a folder)."""
    if tmp is not None:
        remove_path(Path(tmp))


@contextmanager
def building(
    final: Path, *, store: bool = False, marker: str | None = None, what: str = "output", keep_suffix: bool = False
) -> Iterator[Path]:
    """``with building(final) as tmp:`` write ``tmp``; it replaces ``final`` when the block ends without
    an error (a store is flagged complete first) and is removed when it raises."""
    tmp = begin(final, keep_suffix)
    try:
        yield tmp
        commit(tmp, final, store=store, marker=marker, what=what)
    except BaseException:
        discard(tmp)
        raise


def build_once(
    output: Path, is_current: Callable[[], bool], build: Callable[[], T], timeout: float = 3600.0
) -> T | None:
    """Build ``output`` unless it is current; two runs at once never both build it. Returns what
    ``build`` returned, or None when the output was current (before or after waiting for another run)."""
    from .locks import output_lock

    if is_current():
        return None
    with output_lock(output, timeout=timeout):
        if is_current():  # another run built it while this one waited
            return None
        return build()


def mark_complete(path: Path) -> None:
    """Flag the store at ``path`` as finished (done last, before it is renamed into place)."""
    import zarr

    zarr.open_group(str(path), mode="r+").attrs["complete"] = True
