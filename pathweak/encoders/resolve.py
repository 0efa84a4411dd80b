"""Where a preset's weights are on this machine, never over the network: ``--weights FILE``, then
``--weights DIR`` (a hub snapshot folder), then the local Hugging Face cache (``HF_HUB_CACHE`` /
``HF_HOME``, ``models--Org--Name/snapshots/<rev>/``), looked up offline with huggingface_hub under every
repo-id spelling the toolkits use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .presets import Preset
from .presets.record import hub_login

GENERIC_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")


@dataclass(frozen=True)
class Located:
    """A preset's weights file on disk and the hub ``config.json`` beside it (when there is one)."""

    file: Path
    config: Path | None
    source: str  # "file", "folder" or "hf-cache"


def cache_dirs() -> list[Path]:
    """The Hugging Face hub caches to search, read from the environment at call time."""
    dirs = []
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            dirs.append(Path(os.environ[var]).expanduser())
    home = os.environ.get("HF_HOME")
    dirs.append(Path(home).expanduser() / "hub" if home else Path.home() / ".cache" / "huggingface" / "hub")
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def repo_folder(cache: Path, repo: str, repo_type: str = "model") -> Path:
    """``<cache>/models--Org--Name`` (``datasets--`` for a dataset repo)."""
    return cache / f"{repo_type}s--{repo.replace('/', '--')}"


def locate(preset: Preset, weights: str | Path | None) -> tuple[Located | None, list[str]]:
    """The weights of ``preset`` (None when not found) and the places looked, in order."""
    looked: list[str] = []
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_file():
            cfg = path.parent / "config.json"
            return Located(path, cfg if cfg.is_file() else None, "file"), [str(path)]
        if path.is_dir():
            found = _in_folder(path, preset)
            looked.append(f"{path}/{{{','.join(_names(preset))}}}")
            if found:
                cfg = path / "config.json"
                return Located(found, cfg if cfg.is_file() else None, "folder"), looked
            return None, looked
        looked.append(f"{path} (does not exist)")
        return None, looked
    if not preset.repo:
        return None, ["--weights (not given; this model is not on the Hugging Face hub)"]
    looked.append("--weights (not given)")
    for cache in cache_dirs():
        for repo in (preset.repo, *preset.repo_aliases):
            folder = repo_folder(cache, repo, preset.repo_type)
            looked.append(f"{folder}/snapshots/*/{{{','.join(preset.files)}}}")
            cached = _in_cache(cache, repo, preset)
            if cached:
                return cached, looked
    return None, looked


def resolve(preset: Preset, weights: str | Path | None) -> Located:
    """Like :func:`locate`, but nothing found is one error listing the places and the download command."""
    found, looked = locate(preset, weights)
    if found:
        return found
    if weights is not None and Path(weights).expanduser().is_dir():
        raise ConfigError(
            f"no weights file of {preset.name} in the folder (expected one of {', '.join(_names(preset))})",
            path=weights,
            fix=f"pass the hub snapshot folder of {preset.repo or preset.name} or the file itself",
        )
    if weights is not None:
        raise ConfigError("weights file or folder not found", path=weights, fix="check the --weights path")
    if not preset.repo:
        raise ConfigError(f"no weights for {preset.name} (looked: {'; '.join(looked)})", fix=preset.get)
    gate = (
        f"request access on https://huggingface.co/{'datasets/' if preset.repo_type == 'dataset' else ''}{preset.repo}"
        f" and log in (`{hub_login()}`), then "
        if preset.gated
        else ""
    )
    raise ConfigError(
        f"no weights for {preset.name} on this machine (nothing is downloaded at run time); looked in: {'; '.join(looked)}",
        fix=f"{gate}run `{preset.download}` (set HF_HUB_CACHE or HF_HOME if the cache lives elsewhere), "
        "or pass --weights FILE|DIR",
    )


def _names(preset: Preset) -> list[str]:
    names = [*preset.files, *(Path(f).name for f in preset.files if "/" in f)]
    return list(dict.fromkeys([*names, *GENERIC_FILES]))


def _in_folder(folder: Path, preset: Preset) -> Path | None:
    for name in _names(preset):
        if (folder / name).is_file():
            return folder / name
    candidates = [p for ext in ("*.safetensors", "*.bin", "*.pth", "*.pt") for p in sorted(folder.glob(ext))]
    return candidates[0] if len(candidates) == 1 else None


def _in_cache(cache: Path, repo: str, preset: Preset) -> Located | None:
    """A cached file of ``repo`` (the ``main`` ref first, via huggingface_hub offline; else the newest snapshot)."""
    if not repo_folder(cache, repo, preset.repo_type).is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    for name in preset.files:
        hit = try_to_load_from_cache(repo, name, cache_dir=str(cache), repo_type=preset.repo_type)
        if isinstance(hit, str) and Path(hit).is_file():
            cfg = try_to_load_from_cache(repo, "config.json", cache_dir=str(cache), repo_type=preset.repo_type)
            return Located(Path(hit), Path(cfg) if isinstance(cfg, str) else None, "hf-cache")
    snapshots = sorted(
        repo_folder(cache, repo, preset.repo_type).glob("snapshots/*"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for snap in snapshots:  # downloaded at a revision other than main
        for name in preset.files:
            if (snap / name).is_file():
                cfg = snap / "config.json"
                return Located(snap / name, cfg if cfg.is_file() else None, "hf-cache")
    return None
