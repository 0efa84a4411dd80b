"""The metadata check: does the slide's recorded resolution agree with the one its pixels show?

``MISMATCH_FACTOR`` (1.6x) lies between the estimate's own spread (its ~95% range is at least 1.35x either
side) and the 2x step between 20x (~0.5 um/px) and 40x (~0.25 um/px) scans, so a 2x, 4x or 10x error is
caught while an estimate that is merely imprecise is not called a disagreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import MissingMppError, PathweakError
from .estimate import MppEstimate, estimate_mpp

if TYPE_CHECKING:
    from ..io.base import Slide

MISMATCH_FACTOR = 1.6
CheckMode = Literal["off", "warn", "strict"]
Status = Literal["agrees", "disagrees", "no-metadata", "cannot-tell"]


class MppMismatchError(PathweakError):
    """The slide's resolution and the resolution estimated from its pixels disagree (``--strict-mpp``)."""


@dataclass(frozen=True)
class MppCheck:
    """The recorded level-0 mpp (``None`` when the file has none) against the estimate; ``ratio`` is
    recorded / estimated."""

    recorded: float | None
    recorded_source: str | None
    estimate: MppEstimate
    status: Status
    ratio: float | None = None
    factor: float = MISMATCH_FACTOR

    @property
    def disagrees(self) -> bool:
        return self.status == "disagrees"

    def message(self) -> str:
        """One line describing a disagreement (empty when there is none)."""
        if not self.disagrees:
            return ""
        e = self.estimate
        what = "recorded" if self.recorded_source == "metadata" else "given"
        return (
            f"the {what} resolution {self.recorded:.4g} um/px disagrees with the {e.mpp:.3g} um/px "
            f"({e.low:.3g}-{e.high:.3g}) its nuclei show, by {_fold(self.ratio)} (more than {self.factor:g}x)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "recorded": self.recorded,
            "recorded_source": self.recorded_source,
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "factor": self.factor,
            "estimate": self.estimate.as_dict(),
        }


def compare(
    recorded: float | None,
    estimate: MppEstimate,
    recorded_source: str | None = "metadata",
    factor: float = MISMATCH_FACTOR,
) -> MppCheck:
    """Compare a recorded level-0 mpp with an estimate."""
    if not estimate.ok:
        return MppCheck(recorded, recorded_source, estimate, "cannot-tell", factor=factor)
    if recorded is None:
        return MppCheck(None, None, estimate, "no-metadata", factor=factor)
    ratio = recorded / float(estimate.mpp)  # type: ignore[arg-type]
    status: Status = "disagrees" if max(ratio, 1 / ratio) > factor else "agrees"
    return MppCheck(recorded, recorded_source, estimate, status, ratio, factor)


def check_mpp(slide: Slide, estimate: MppEstimate | None = None, factor: float = MISMATCH_FACTOR) -> MppCheck:
    """Check ``slide.mpp`` (metadata or the user's override) against the estimate from its pixels."""
    estimate = estimate or estimate_mpp(slide)
    recorded = None if slide.mpp is None else float(max(slide.mpp))
    return compare(recorded, estimate, slide.mpp_source, factor)


def resolve_tiling_mpp(
    slide: Slide, use_estimate: bool, mode: CheckMode
) -> tuple[float | None, dict[str, Any], str | None]:
    """What the tiler needs: (the mpp override to tile with, or None to keep the slide's; the attrs to record
    under the store's ``mpp`` section; a warning line or None).

    ``use_estimate`` tiles at the estimated resolution (``--mpp estimate``); ``mode`` "warn" or "strict"
    checks the slide's own resolution against the estimate, and "strict" raises
    :class:`MppMismatchError` on a disagreement. Nothing is estimated when neither is asked for.
    """
    if not use_estimate and mode == "off":
        return None, {}, None
    estimate = estimate_mpp(slide)
    if use_estimate:
        if not estimate.ok:
            raise MissingMppError(
                f"the resolution cannot be estimated from the image: {estimate.reason}",
                path=slide.path,
                fix="pass the resolution with --mpp (e.g. 0.25 for 40x, 0.5 for 20x)",
            )
        recorded = None if slide.metadata_mpp is None else float(max(slide.metadata_mpp))
        check = compare(recorded, estimate, "metadata" if recorded is not None else None)
        override: float | None = float(estimate.mpp)  # type: ignore[arg-type]
        record = {
            "source": "estimated",
            "estimate": estimate.as_dict(),
            "check": {k: v for k, v in check.as_dict().items() if k != "estimate"},
        }
    else:
        check = check_mpp(slide, estimate)
        override = None
        record = {"check": check.as_dict()}
    warning = None
    if check.disagrees:
        if mode == "strict":
            raise MppMismatchError(
                check.message(),
                path=slide.path,
                fix="check the scan's resolution and pass the right --mpp (or --mpp estimate), "
                "or drop --strict-mpp to tile anyway",
            )
        warning = f"{slide.path}: {check.message()}; tiling at {override or check.recorded:.4g} um/px"
    return override, record, warning


def _fold(ratio: float | None) -> str:
    r = ratio or 1.0
    return f"{max(r, 1 / r):.1f}x"
