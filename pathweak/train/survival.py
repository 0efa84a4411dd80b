"""Survival: the training losses, the risk score and the metrics (``--task survival``).

Libraries: the Cox partial likelihood is torchsurv's (``torchsurv.loss.cox.neg_partial_log_likelihood``,
Efron ties: a differentiable torch loss that runs on the bags of one optimiser step on any device); the
metrics, Kaplan-Meier curves and the log-rank test are scikit-survival's (Harrell's
``concordance_index_censored``, Uno's ``concordance_index_ipcw``, ``cumulative_dynamic_auc``,
``kaplan_meier_estimator``, ``compare_survival``), the reference implementations in Python. lifelines has
neither Uno's concordance nor the time-dependent AUC. Neither torchsurv nor scikit-survival has the
discrete-time (logistic hazard) likelihood, so :func:`discrete_nll` is written here (a few lines, the
formula of Zadeh & Schmid 2021 as used by Patch-GCN and MCAT); a test checks it against a brute-force
product of per-bin probabilities.

Heads: with the Cox loss a head has one output, the log relative hazard (the slide's risk). With the
discrete-time loss it has one output per time bin (``survival_bins``, edges at quantiles of the training
slides' event times): logits of the hazard of each bin; the risk is minus the expected survival over the
bins (``-sum_k S_k``). Per tile, the same transforms of the head's per-tile outputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

LOSSES = ("cox", "discrete")


def cox_loss(log_hz: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood (torchsurv, Efron ties, mean over events) of a step's bags;
    zero (no gradient) when none of them had an event."""
    import warnings

    with warnings.catch_warnings():  # torchsurv's import uses torch.jit.script, which torch now deprecates
        warnings.simplefilter("ignore", FutureWarning)
        from torchsurv.loss.cox import neg_partial_log_likelihood

    event = event.bool()
    if not bool(event.any()):
        return log_hz.sum() * 0.0
    return neg_partial_log_likelihood(
        log_hz.float().reshape(-1), event, time.float(), ties_method="efron", reduction="mean"
    )


def discrete_nll(logits: torch.Tensor, bins: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Discrete-time negative log-likelihood (logistic hazard), mean over bags. ``logits`` (B, K) the
    hazard logits per bin, ``bins`` (B,) the bin of each follow-up time, ``event`` (B,) 1/0. An event in
    bin k has likelihood ``S_{k-1} h_k``, a censoring in bin k ``S_k`` (survived the bin)."""
    log_h = torch.nn.functional.logsigmoid(logits.float())  # log h_k
    log_1mh = torch.nn.functional.logsigmoid(-logits.float())  # log(1 - h_k)
    log_s = torch.cumsum(log_1mh, dim=1)  # log S_k
    log_s_prev = torch.cat([torch.zeros_like(log_s[:, :1]), log_s[:, :-1]], dim=1)  # log S_{k-1}
    k = bins.long().clamp(0, logits.shape[1] - 1).view(-1, 1)
    e = event.float().view(-1)
    uncensored = log_s_prev.gather(1, k).view(-1) + log_h.gather(1, k).view(-1)
    censored = log_s.gather(1, k).view(-1)
    return -(e * uncensored + (1 - e) * censored).mean()


def risk_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Risk (higher = earlier event) of outputs (..., K): the log hazard for K = 1 (Cox), else minus the
    expected survival over the bins."""
    if logits.shape[-1] == 1:
        return logits[..., 0].float()
    return -torch.cumprod(torch.sigmoid(-logits.float()), dim=-1).sum(-1)


def time_bins(times: np.ndarray, events: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner edges (n_bins - 1,) at quantiles of the event times (all times when too few events)."""
    t = times[events == 1] if int(events.sum()) >= n_bins else times
    edges = np.quantile(t, np.linspace(0, 1, n_bins + 1)[1:-1]) if n_bins > 1 else np.zeros(0)
    return np.asarray(edges, np.float64)


def bin_index(times: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, times, side="right").astype(np.int64)


# -- metrics --------------------------------------------------------------------------------------------------


def _structured(y: np.ndarray) -> np.ndarray:
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(y[:, 1]) > 0.5, time=np.asarray(y[:, 0], np.float64))


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance (scikit-survival); NaN without a comparable pair."""
    from sksurv.metrics import concordance_index_censored

    try:
        return float(
            concordance_index_censored(
                np.asarray(event) > 0.5, np.asarray(time, np.float64), np.asarray(risk, np.float64)
            )[0]
        )
    except (ValueError, ZeroDivisionError):
        return math.nan


def survival_metrics(y: np.ndarray, risk: np.ndarray, times: tuple[float, ...] = ()) -> dict[str, float]:
    """``y`` (n, 2) of (time, event), ``risk`` (n,) or (n, 1). Harrell's and Uno's concordance (the
    censoring distribution estimated on the same slides, truncated at the last event time) and the
    cumulative/dynamic AUC at each of ``times`` (``td_auc_<t>``; NaN where a time is outside the follow-up
    or no slide has an event before it). All scikit-survival."""
    from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc

    y = np.asarray(y, np.float64)
    risk = np.asarray(risk, np.float64).reshape(-1)
    out = {"c_index": harrell_c(y[:, 0], y[:, 1], risk)}
    surv = _structured(y)
    event_times = y[y[:, 1] > 0.5, 0]
    try:
        tau = float(event_times.max()) if len(event_times) else None
        out["uno_c"] = float(concordance_index_ipcw(surv, surv, risk, tau=tau)[0])
    except (ValueError, ZeroDivisionError):
        out["uno_c"] = math.nan
    for t in times:
        key = f"td_auc_{t:g}"
        try:
            with np.errstate(all="ignore"):
                auc, _ = cumulative_dynamic_auc(surv, surv, risk, [t])
            out[key] = float(np.asarray(auc).reshape(-1)[0])
        except (ValueError, ZeroDivisionError, IndexError):
            out[key] = math.nan
    return out


def default_times(times: np.ndarray, events: np.ndarray) -> tuple[float, ...]:
    """The quartiles of the event times (3 significant digits): the time-dependent AUC's default times."""
    t = times[events == 1]
    return tuple(float(f"{v:.3g}") for v in np.quantile(t, [0.25, 0.5, 0.75])) if len(t) else ()


def kaplan_meier(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(times, survival probability) of the Kaplan-Meier estimate (scikit-survival)."""
    from sksurv.nonparametric import kaplan_meier_estimator

    t, s = kaplan_meier_estimator(np.asarray(event) > 0.5, np.asarray(time, np.float64))
    return np.asarray(t), np.asarray(s)


def logrank_p(time: np.ndarray, event: np.ndarray, group: np.ndarray) -> float:
    """p-value of the log-rank test between the groups (scikit-survival's ``compare_survival``)."""
    from sksurv.compare import compare_survival

    if len(set(np.asarray(group).tolist())) < 2:
        return math.nan
    y = _structured(np.column_stack([time, event]).astype(np.float64))
    try:
        return float(compare_survival(y, np.asarray(group))[1])
    except (ValueError, np.linalg.LinAlgError):
        return math.nan
