"""Lightning's console noise, silenced where pathweak runs Trainers (pretraining, head training)."""

from __future__ import annotations

from typing import Any


class quiet_lightning:
    """Silences Lightning's start-up banners (accelerator lines, tips, time-limit notices) and warnings that
    do not apply: few loader workers (bags come from memory), deprecations inside Lightning itself, and a
    resumed run's existing checkpoint folder."""

    def __enter__(self) -> None:
        import logging
        import warnings

        self._levels = {n: logging.getLogger(n).level for n in ("lightning.pytorch", "lightning.fabric", "lightning")}
        for n in self._levels:
            logging.getLogger(n).setLevel(logging.WARNING)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")

    def __exit__(self, *exc: Any) -> None:
        import logging

        self._warnings.__exit__(*exc)
        for n, level in self._levels.items():
            logging.getLogger(n).setLevel(level)


def epoch_lines(label: str) -> list[Any]:
    """A callback writing a progress line after the first epoch and then at most every LINE_EVERY
    seconds, when progress lines are on (pathweak.progress: output to a log, not a terminal); else none."""
    import time

    from .progress import LINE_EVERY, lines_on, log_line

    if not lines_on():
        return []
    import lightning as L

    class EpochLines(L.Callback):
        last = -float("inf")

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            now = time.monotonic()
            if now - self.last < LINE_EVERY:
                return
            self.last = now
            metrics = trainer.callback_metrics.items()
            shown = {k.removesuffix("_epoch"): float(v) for k, v in sorted(metrics) if not k.endswith("_step")}
            values = ", ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items()))
            log_line(f"{label} epoch {trainer.current_epoch}, step {trainer.global_step}: {values}")

    return [EpochLines()]
