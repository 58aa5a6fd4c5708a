"""The Jensen-Shannon consistency loss that IPMix trains with in JSD mode (see ``docs/ipmix-spec.md``).

``loss = CE(logits_clean, y) + weight * mean_i KL-term(p_mix, p_i)``, i in {clean, view1, view2},
with ``p_i = softmax(logits_i)`` and ``p_mix = clamp((p_clean + p_view1 + p_view2) / 3, 1e-7, 1)``.

The KL term is the one of the authors' reference code (inherited from AugMix):
``F.kl_div(log p_mix, p_i, reduction="batchmean")``, which is ``sum_c p_i log(p_i / p_mix)`` averaged
over the batch, i.e. ``KL(p_i || p_mix)``; its mean over the three views is the Jensen-Shannon
divergence of the three distributions. The spec writes it as "KL(p_mix || p_i)", naming the two
arguments in ``F.kl_div``'s order; we follow the reference code's numbers.
"""

from __future__ import annotations

from .extras import require

torch = require("torch", "dali_ipmix.losses (the JSD loss)")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

__all__ = ["jsd_loss", "JSDLoss", "MIXTURE_FLOOR"]

#: Lower clamp of the mixture distribution; keeps ``log p_mix`` finite when all three views agree on 0.
MIXTURE_FLOOR = 1e-7


def jsd_loss(logits_clean: torch.Tensor, logits_view1: torch.Tensor, logits_view2: torch.Tensor,
             targets: torch.Tensor, weight: float = 12.0) -> torch.Tensor:
    """Cross-entropy on the clean logits plus ``weight`` times the Jensen-Shannon consistency term.

    Args:
        logits_clean, logits_view1, logits_view2: ``(N, C)`` unnormalised class scores of the clean
            image and of the two IPMix views of the same ``N`` samples (any float dtype; computed in
            float32 so that float16 logits under AMP do not underflow in the softmax).
        targets: ``(N,)`` int64 class indices in ``[0, C)``.
        weight: factor of the consistency term (the paper's 12); 0 gives plain cross-entropy.

    Returns:
        A scalar float32 tensor (mean over the batch), differentiable w.r.t. all three logits.
    """
    if not (logits_clean.shape == logits_view1.shape == logits_view2.shape) or logits_clean.dim() != 2:
        raise ValueError(
            "jsd_loss expects three (N, C) logits of the same shape, got "
            f"{tuple(logits_clean.shape)}, {tuple(logits_view1.shape)}, {tuple(logits_view2.shape)}")
    if targets.shape != logits_clean.shape[:1]:
        raise ValueError(
            f"jsd_loss: targets has shape {tuple(targets.shape)}, expected ({logits_clean.shape[0]},)")
    logits = [t.float() for t in (logits_clean, logits_view1, logits_view2)]
    loss = F.cross_entropy(logits[0], targets)
    if weight == 0:
        return loss
    # log_softmax + log_target=True gives the same value as kl_div(log_mix, softmax(...)) but stays
    # finite in the backward pass when a softmax underflows to an exact 0 (xlogy's gradient at 0 is -inf).
    log_probs = [F.log_softmax(t, dim=1) for t in logits]
    mix = (log_probs[0].exp() + log_probs[1].exp() + log_probs[2].exp()) / 3.0
    log_mix = torch.clamp(mix, MIXTURE_FLOOR, 1.0).log()
    consistency = sum(F.kl_div(log_mix, lp, reduction="batchmean", log_target=True) for lp in log_probs) / 3.0
    return loss + weight * consistency


class JSDLoss(nn.Module):
    """``criterion(model(x), y)`` for both kinds of batch, for scripts built around that call.

    ``forward(logits, targets)``: ``logits`` ``(3N, C)``, the model's output on the JSD batch
    ``torch.cat([clean, view1, view2])`` (in that order), with ``targets`` ``(N,)``, gives
    :func:`jsd_loss` of its three ``(N, C)`` thirds; ``(N, C)`` logits (a plain batch, or
    validation) give cross-entropy. ``logits`` may also be a tuple of the three ``(N, C)`` tensors.
    Any other row count is an error naming both shapes.

    Args:
        weight: factor of the consistency term (the paper's 12).
    """

    def __init__(self, weight: float = 12.0):
        super().__init__()
        self.weight = float(weight)

    def forward(self, logits, targets: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, (tuple, list)):
            if len(logits) != 3:
                raise ValueError(f"JSDLoss: a tuple of logits must hold 3 tensors (clean, view1, view2), "
                                 f"got {len(logits)}")
            return jsd_loss(*logits, targets, weight=self.weight)
        if logits.dim() != 2 or targets.dim() != 1:
            raise ValueError(f"JSDLoss expects (3N, C) or (N, C) logits and (N,) targets, got logits "
                             f"{tuple(logits.shape)} and targets {tuple(targets.shape)}")
        n = targets.shape[0]
        if logits.shape[0] == n:
            return F.cross_entropy(logits.float(), targets)
        if logits.shape[0] == 3 * n:
            return jsd_loss(*logits.split(n), targets, weight=self.weight)
        raise ValueError(f"JSDLoss: logits {tuple(logits.shape)} for targets {tuple(targets.shape)}: expected "
                         f"{3 * n} rows (a JSD batch: clean, view1, view2 concatenated) or {n} (a plain batch)")

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}"
