"""The heads by name: :data:`HEADS`, :data:`WRAPPERS`, :func:`register_head`, :func:`create_head`, :func:`head_info`.

Every built-in head is declared here with the module that defines it, so its name is known without
importing torch (``pathweak train --help``, a cohort spec's check); the module is imported when the head
is first built. A head of your own registers with ``@register_head(name)`` when its module is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._registry import Registry
from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import MILHead

#: name -> the module of pathweak.heads whose ``@register_head(name)`` defines it
BUILT_IN = {
    "abmil": "pooling",
    "clam_mb": "clam",
    "clam_sb": "clam",
    "dsmil": "dsmil",
    "ins": "ins",
    "max": "pooling",
    "mean": "pooling",
    "transmil": "transmil",
    "wsseg": "wsseg",
}

HEADS: Registry[type[MILHead]] = Registry("head", {name: f"pathweak.heads.{m}" for name, m in BUILT_IN.items()})
# head options that wrap the named head in another module: option name -> (name, in_dim, n_outputs, value,
# the other options) -> head; declared with the module that registers it (heads/sla.py: label_augmentation)
WRAPPERS: Registry[Any] = Registry("head wrapper", {"label_augmentation": "pathweak.heads.sla"})


def register_head(name: str) -> Any:
    """Class decorator: add a head to :data:`HEADS` under ``name`` (also its ``name`` attribute)."""

    def decorator(cls: type[MILHead]) -> type[MILHead]:
        cls.name = name
        return HEADS.register(name)(cls)

    return decorator


def create_head(name: str, in_dim: int, n_outputs: int, **options: Any) -> MILHead:
    """A head from the registry by name (see ``pathweak heads list``), with its keyword options (an option
    of :data:`WRAPPERS` wraps it, e.g. ``label_augmentation``)."""
    for key in WRAPPERS:
        if key in options:
            value = options.pop(key)
            return WRAPPERS.get(key)(name, in_dim, n_outputs, value, options)
    cls = HEADS.get(name)
    try:
        return cls(in_dim, n_outputs, **options)
    except TypeError as exc:
        raise ConfigError(
            f"bad options for head {name!r}: {exc}", fix="see `pathweak heads list` for its options"
        ) from None


def head_info() -> list[dict[str, str]]:
    """Name, one-line description and options of every registered head."""
    import inspect

    rows = []
    for name in HEADS:
        cls = HEADS.get(name)
        params = [
            f"{p.name}={p.default!r}"
            for p in inspect.signature(cls.__init__).parameters.values()
            if p.kind is p.KEYWORD_ONLY
        ]
        rows.append(
            {"name": name, "description": (cls.__doc__ or "").strip().splitlines()[0], "options": ", ".join(params)}
        )
    return rows
