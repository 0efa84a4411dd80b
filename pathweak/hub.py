"""Model weights on this machine, never over the network (ground floor: every stage with a model uses it).

Finding them: ``--weights FILE``, then ``--weights DIR`` (a hub snapshot folder), then the local Hugging Face
cache (``HF_HUB_CACHE`` / ``HF_HOME``, ``models--Org--Name/snapshots/<rev>/``), looked up offline with
huggingface_hub under every repo-id spelling the toolkits use; nothing found is one error listing the places
and the download command. Reading them: tensors only (``weights_only``: no pickled code runs), a
``state_dict``/``model``/... wrapper unwrapped. Loading them: strictly, one error naming the first offenders.
What is looked up is any record with the fields of :class:`WeightsSource` (an encoder preset, a tissue
model, a slide encoder, a text tower)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import ConfigError


class WeightsSource(Protocol):
    """What the lookup needs to know of a model: its name and where its weights live."""

    @property
    def name(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def repo(self) -> str | None: ...
    @property
    def repo_aliases(self) -> tuple[str, ...]: ...
    @property
    def repo_type(self) -> str: ...
    @property
    def files(self) -> tuple[str, ...]: ...
    @property
    def gated(self) -> bool: ...
    @property
    def get(self) -> str: ...
    @property
    def download(self) -> str: ...


GENERIC_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")


def hub_cli(installed: str | None = None) -> str:
    """The Hugging Face command the installed huggingface_hub provides: ``hf`` (0.34 and newer; 1.x and 2.x
    install only this one) or ``huggingface-cli`` (older). Read from the package's metadata, so nothing
    is imported; without huggingface_hub, ``hf`` (what installing it now gives)."""
    import re
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = installed or version("huggingface_hub")
    except PackageNotFoundError:
        return "hf"
    numbers = [int(n) for n in re.findall(r"\d+", installed)[:2]] + [0, 0]
    return "hf" if (numbers[0], numbers[1]) >= (0, 34) else "huggingface-cli"


def hub_login() -> str:
    """The log-in command of the installed Hugging Face CLI (``hf auth login`` or ``huggingface-cli login``)."""
    return "hf auth login" if hub_cli() == "hf" else "huggingface-cli login"


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


def locate(preset: WeightsSource, weights: str | Path | None) -> tuple[Located | None, list[str]]:
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


def resolve(preset: WeightsSource, weights: str | Path | None, option: str = "--weights") -> Located:
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
        raise ConfigError("weights file or folder not found", path=weights, fix=f"check the {option} path")
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
        f"or pass {option} FILE|DIR",
    )


def _names(preset: WeightsSource) -> list[str]:
    names = [*preset.files, *(Path(f).name for f in preset.files if "/" in f)]
    return list(dict.fromkeys([*names, *GENERIC_FILES]))


def _in_folder(folder: Path, preset: WeightsSource) -> Path | None:
    for name in _names(preset):
        if (folder / name).is_file():
            return folder / name
    candidates = [p for ext in ("*.safetensors", "*.bin", "*.pth", "*.pt") for p in sorted(folder.glob(ext))]
    return candidates[0] if len(candidates) == 1 else None


def _in_cache(cache: Path, repo: str, preset: WeightsSource) -> Located | None:
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


WRAPPERS = ("state_dict", "model", "teacher", "student")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The tensors of a weights file, keys as written (a ``state_dict``/``model``/... wrapper unwrapped)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError("weights file not found", path=path, fix="check the --weights path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            try:  # memory-mapped: the tensors stay in the page cache until copied into the network
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # a legacy (non-zip) checkpoint cannot be mapped
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(
            f"cannot read the weights ({exc})", path=path, fix="pass a .safetensors, .pth or .bin state dict"
        ) from None
    for key in WRAPPERS:
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise ConfigError(
            "the file holds no state dict of tensors",
            path=path,
            fix="pass the checkpoint's weights file (a .safetensors, .pth or .bin state dict)",
        )
    return state


def check_fits(
    own: dict[str, Any], state: dict[str, Any], what: str, path: str | Path | None, fix: str | None = None
) -> None:
    """Every tensor of ``own`` (a network's state dict: names -> tensors, meta ones included) present in
    ``state`` with its shape, and nothing left over; else one error naming the first offenders."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} with another shape (e.g. {wrong[:2]})")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        raise ConfigError(
            f"the weights do not fit {what}: {len(own)} tensors expected, {'; '.join(parts)}",
            path=path,
            fix=fix
            or "pass the weights of this model (see `pathweak encoders info`), or the encoder these weights belong to",
        )


def load_strict(net: Any, state: dict[str, Any], what: str, path: str | Path, fix: str | None = None) -> None:
    """Load ``state`` into ``net`` after :func:`check_fits` (strictly: every key, every shape)."""
    check_fits(net.state_dict(), state, what, path, fix)
    net.load_state_dict(state, strict=True)
