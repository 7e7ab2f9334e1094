"""Influence through a language model's output layer, in closed form (``head=model.lm_head``).

The LM analogue of the classifier-head route: the per-sample gradient of the output layer under the
per-sequence mean token cross-entropy is g_i = sum_t w_it e_it h_it^T, with e = softmax(z) - onehot(y)
and h the layer's input, so one forward pass without gradients gives everything. The logits are
never formed in full: each statistic runs over vocabulary chunks (``capture.linear_ce``), so memory
is the hidden states plus one block, whatever the vocabulary. A head whose weight is tied to the
input embedding has a per-sample gradient through the embedding too, which needs a backward:
that case is referred to ``targets=``.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..capture import select_targets
from ..capture.head import check_head
from ..capture.linear_ce import head_bypassed, head_terms, log_sum_exp
from ..causal_lm import lm_inputs, returns_head_logits, token_weights
from ..dispatch import resolve_backend
from ..errors import BatchPositionsError
from ..forget_set import ForgetBatch, ForgetSet, local_share
from ..forget_set.validate import check_finite_inputs, check_finite_rows, name_positions, on_device
from ..model_io import model_device
from ..modes import preserved_modes
from ..statistics.sums import TermSums
from .cache import BudgetCache
from .result import InfluenceResult
from .solve import damped_ratio


def _names(model: nn.Module, head: nn.Linear) -> dict[str, str]:
    """{"weight"/"bias": parameter name}; a parameter the head shares with another layer is refused."""
    names = {}
    for name, sp in select_targets(model, [head]).params.items():
        if len(sp.uses) > 1:
            others = [t.module_name for t, _ in sp.uses if t.module is not head]
            raise ValueError(f"the output layer's {name!r} is tied to {others} (an input embedding), so its per-sample "
                             "gradient runs through that layer too and needs a backward pass: use targets=[<the "
                             "output layer>] with loss_fn=imu_fast.lm.causal_lm_losses instead of head=")
        names[sp.uses[0][1]] = name
    return names


def batch_head_terms(model: nn.Module, head: nn.Linear, batch: ForgetBatch, names: dict[str, str]) -> dict:
    """{parameter name: term} of one batch, from one forward pass without gradients."""
    data = on_device(batch.data, model_device(model), "forget batch's tensors")
    check_finite_inputs(data, batch, "forget")
    input_ids, mask, labels = lm_inputs(data)
    if not returns_head_logits(model, head, input_ids, mask):
        raise ValueError("the model's logits are not its output layer's output (soft-capping or scaling after it), "
                         "so the closed form does not apply: use targets=[<the output layer>] with "
                         "loss_fn=imu_fast.lm.causal_lm_losses")
    with torch.no_grad(), head_bypassed(head) as seen:
        model(input_ids=input_ids, attention_mask=mask)
    h = seen["h"][:, :-1]
    shift = labels[:, 1:]
    try:
        scale = token_weights(shift, torch.promote_types(h.dtype, torch.float32))
    except BatchPositionsError as exc:
        raise name_positions(exc, batch, "forget") from None
    n, t, d = h.shape
    lse = log_sum_exp(h.reshape(n * t, d), head.weight.detach(), None if head.bias is None else head.bias.detach())
    lse = lse.reshape(n, t)
    check_finite_rows(torch.where(scale > 0, lse, torch.zeros_like(lse)), "logits", batch, "forget")
    terms = head_terms(h, head.weight, head.bias, lse, shift.clamp_min(0), scale)
    return {names[local]: term for local, term in terms.items() if local in names}


def lm_head_influence_scores(model: nn.Module, forget: ForgetSet, *, head: nn.Module, damping: float, backend: str,
                             memory_budget: int, progress: bool, shard: bool | None = None) -> InfluenceResult:
    """Inside a process group each process reads its block of the forget set; the sums are reduced
    and the scores gathered, so every process gets the one-process result."""
    label = check_head(model, head)
    started = time.perf_counter()
    whole, forget = forget, local_share(forget, shard)
    sharded = forget is not whole
    sums = TermSums(backend)
    cache = BudgetCache(memory_budget)
    bar = tqdm(total=forget.size, desc="influence", unit="sample", disable=not progress, leave=False)
    with preserved_modes(model), distributed.together("the influence pass over the forget set", sharded):
        model.eval()
        names = _names(model, head)
        for batch in forget.batches():
            terms = batch_head_terms(model, head, batch, names)
            for name, term in terms.items():
                sums.update(name, term)
            cache.offer(terms, sum(term.nbytes() for term in terms.values()))
            sums.add_samples(batch.size)
            bar.update(batch.size)
    if sharded:
        sums.all_reduce(model_device(model))
    with preserved_modes(model), distributed.together("the scoring pass over the forget set", sharded):
        model.eval()
        m, fisher, mean_grad = damped_ratio(sums.grad, sums.fisher, sums.n, damping)
        items = cache.replay(forget, lambda batch: batch_head_terms(model, head, batch, names))
        scores = torch.cat([(-sum(term.dot(m[name]) for name, term in terms.items())).cpu() for terms in items])
    bar.close()
    if sharded:
        scores = distributed.gather_rows(scores)
    return InfluenceResult(scores=scores, indices=whole.indices.clone(), fisher={k: v.cpu() for k, v in fisher.items()},
                           mean_grad={k: v.cpu() for k, v in mean_grad.items()}, head=label,
                           backend=resolve_backend(backend, model_device(model)), damping=damping,
                           seconds=time.perf_counter() - started)
