"""Fisher error weights (quant.collect_error_weights) and the fitter's use of them, each
checked against an independent computation on tiny tensors; and the fitter's speed-ups
(batched ladder statistics, one GPTQ factor per tensor) give the numbers of the plain loops."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

import quant
from quant import fitter
from quant.gptq import gptq_factor, gptq_quantize
from quant.scalar import qmax_for


class _Tiny(nn.Module):
    """Embedding -> Linear -> tanh -> Linear head: no token mixing, so token t's loss depends on
    token t's path only and per-token gradients are the gradients of one-token batches."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.e = nn.Embedding(7, 4)
        self.l = nn.Linear(4, 5, bias=False)
        self.h = nn.Linear(5, 7, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = self.h(torch.tanh(self.l(self.e(x))))
        return nn.functional.cross_entropy(z.reshape(-1, 7), y.reshape(-1))


def _batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 7, (2, 3), generator=g), torch.randint(0, 7, (2, 3), generator=g))
            for _ in range(2)]


def test_error_weights_are_half_the_mean_squared_per_token_gradient():
    m = _Tiny()
    om = quant.collect_error_weights(m, _batches(), {"l.weight": m.l, "h.weight": m.h})
    assert all(p.grad is None for p in m.parameters())  # leaves no gradients behind
    ref = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    n_tok = 0
    for x, y in _batches():
        for xi, yi in zip(x.reshape(-1), y.reshape(-1)):
            m.zero_grad()
            m(xi.reshape(1, 1), yi.reshape(1, 1)).backward()
            for n, p in m.named_parameters():
                ref[n] += p.grad ** 2
            n_tok += 1
    for name in ("l.weight", "h.weight", "e.weight"):  # e: the lookup rule (one-hot inputs)
        torch.testing.assert_close(om[name], 0.5 * ref[name] / n_tok, rtol=1e-5, atol=1e-9)


class _LoopTiny(_Tiny):
    """_Tiny with its middle Linear run twice (a depth loop over one layer): one weight, two calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.l = nn.Linear(4, 4, bias=False)
        self.h = nn.Linear(4, 7, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = self.h(torch.tanh(self.l(torch.tanh(self.l(self.e(x))))))
        return nn.functional.cross_entropy(z.reshape(-1, 7), y.reshape(-1))


def test_a_weight_the_forward_runs_twice_gets_its_whole_per_token_gradient_squared():
    """The per-token gradient of a looped layer's weight is the sum of both calls' g x^T; its
    square has the cross term that squaring each call alone drops (checked: without it the
    entries here come out 0.73-1.91x of these; on the CPU frontier model's looped block the
    sum over a tensor rises 1.4-1.7x with it)."""
    m = _LoopTiny()
    om = quant.collect_error_weights(m, _batches(), {"l.weight": m.l})["l.weight"]
    ref, n_tok = torch.zeros(4, 4), 0
    for x, y in _batches():
        for xi, yi in zip(x.reshape(-1), y.reshape(-1)):
            m.zero_grad()
            m(xi.reshape(1, 1), yi.reshape(1, 1)).backward()
            ref += m.l.weight.grad ** 2
            n_tok += 1
    torch.testing.assert_close(om, 0.5 * ref / n_tok, rtol=1e-5, atol=1e-9)


class _Head(nn.Module):
    """logits = h E^T with the embedding's own weight (a tied head)."""

    def __init__(self, emb: nn.Embedding) -> None:
        super().__init__()
        self._emb = [emb]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(h, self._emb[0].weight)


class _TiedTiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.e = nn.Embedding(7, 4)
        self.l = nn.Linear(4, 4, bias=False)
        self.head = _Head(self.e)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = self.head(torch.tanh(self.l(self.e(x))))
        return nn.functional.cross_entropy(z.reshape(-1, 7), y.reshape(-1))


def test_error_weights_sum_both_roles_of_a_tied_embedding():
    m = _TiedTiny()
    both = quant.collect_error_weights(m, _batches(), {"e.weight": m.head})["e.weight"]
    lookup = quant.collect_error_weights(m, _batches(), {})["e.weight"]
    head = quant.collect_error_weights(m, _batches(), {"head_role": m.head})["head_role"]
    # the head role alone, independently: per-token gradient of an untied copy of E in the head
    ref, n_tok = torch.zeros(7, 4), 0
    for x, y in _batches():
        for xi, yi in zip(x.reshape(-1), y.reshape(-1)):
            w = m.e.weight.detach().clone().requires_grad_(True)
            hid = torch.tanh(m.l(m.e(xi.reshape(1))))
            nn.functional.cross_entropy(nn.functional.linear(hid, w), yi.reshape(1)).backward()
            ref += w.grad ** 2
            n_tok += 1
    torch.testing.assert_close(head, 0.5 * ref / n_tok, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(both, lookup + head)
    assert float((lookup > 0).sum()) < lookup.numel()  # rows of unseen tokens cost nothing


def test_predicted_distortion_with_error_weights_is_the_weighted_rtn_error():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(16, 8, generator=g)
    step = w.std(1) * 12 / qmax_for(6)
    om = torch.rand(16, 8, generator=g)
    curve = fitter.predict_curve(w, step, 6, None, fitter.CurveOptions(elem_weight=om))
    j = fitter.J0 + 5
    s = (step * fitter.multiplier(j))[:, None]
    qm = qmax_for(fitter.bits_for(6, j))
    q = torch.clamp(torch.round(w / s), -qm, qm)
    assert np.isclose(curve.dist[j], float((((w - q * s) ** 2) * om).sum()), rtol=1e-5)
    # a constant row pattern times diag(H) gives the diag(H) curve times that constant
    cw = torch.rand(8, generator=g) + 0.1
    plain = fitter.predict_curve(w, step, 6, cw)
    scaled = fitter.predict_curve(
        w, step, 6, None, fitter.CurveOptions(elem_weight=3.0 * cw[None, :].expand(16, 8)))
    assert np.allclose(scaled.dist[1:], 3.0 * plain.dist[1:], rtol=1e-5)
    assert np.array_equal(scaled.rate, plain.rate)


def test_batched_ladder_stats_equal_the_per_option_loop():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(12, 10, generator=g)
    ss = w.std(1) * 13 / qmax_for(6)
    cw = torch.rand(1, 10, generator=g)
    js = list(range(1, fitter.N_OPTIONS, 7))
    h, e = fitter._ladder_stats(w, ss, 6, js, cw)
    for j, hj, ej in zip(js, h, e):
        qm = qmax_for(fitter.bits_for(6, j))
        s = (ss * fitter.multiplier(j))[:, None]
        q = torch.clamp(torch.round(w / s), -qm, qm)
        _, counts = np.unique(q.numpy(), return_counts=True)
        p = counts / counts.sum()
        assert np.isclose(hj, float(-(p * np.log2(p)).sum()), rtol=1e-9)
        assert np.isclose(ej, float((((w - q * s) ** 2) * cw).sum()), rtol=1e-5)


def test_a_precomputed_gptq_factor_gives_the_same_codes():
    g = torch.Generator().manual_seed(5)
    w = torch.randn(8, 16, generator=g)
    x = torch.randn(64, 16, generator=g)
    h = x.T @ x / 64
    h[3, :] = 0
    h[:, 3] = 0  # a dead column
    fac = gptq_factor(h, 0.01)
    for mult in (0.5, 1.0, 2.0):
        step = w.abs().amax(1) / 31 * mult
        assert torch.equal(gptq_quantize(w, h, step, 31), gptq_quantize(w, h, step, 31, factor=fac))


def test_tensors_without_fisher_weights_get_diag_h_in_the_same_unit():
    """A tensor Omega does not cover (absent or of another shape) is priced by diag(H) per column
    times the median over the covered tensors of mean(Omega) / mean(diag H), so one fit compares
    all distortions in one unit; negative diag entries count as 0; the mix is logged."""
    from types import SimpleNamespace

    from quant.core import _error_weights
    g = torch.Generator().manual_seed(0)
    item = lambda name, r, c, cw: SimpleNamespace(name=name, w=torch.randn(r, c, generator=g),
                                                  col_weight=cw)
    items = [item("a", 4, 3, torch.tensor([1.0, 2.0, 3.0])), item("b", 2, 2, torch.tensor([4.0, 4.0])),
             item("c", 5, 3, None), item("d", 2, 4, torch.tensor([1.0, -1.0, 2.0, 1.0]))]
    omega = {"a": torch.full((4, 3), 6.0), "b": torch.full((2, 2), 2.0), "d": torch.ones(9, 9)}
    lines: list[str] = []
    out = _error_weights(items, omega, lines.append)
    ratio = (6.0 / 2.0 + 2.0 / 4.0) / 2                  # median of two: their mean, 1.75
    assert torch.equal(out["a"], omega["a"]) and torch.equal(out["b"], omega["b"])
    assert torch.allclose(out["c"], torch.full((5, 3), ratio))                   # no diag(H): ones
    assert torch.allclose(out["d"], ratio * torch.tensor([[1.0, 0.0, 2.0, 1.0]]).expand(2, 4))
    assert lines == ["quant:error_weights fisher:2 of 4 tensors (others: diag(H) times the median ratio)"]
    assert _error_weights(items, None, lines.append) == {} == _error_weights(items[2:3], omega, print)
