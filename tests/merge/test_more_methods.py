"""DELLA, SCE, Karcher, NuSLERP, Multi-SLERP, NearSwap, Arcee Fusion and RAM against float64
references written from the papers' / mergekit's formulas (independently of merge/methods),
hand-computed cases, and the statistics of the randomized ones."""

from __future__ import annotations

import math

import pytest
import torch

from merge.errors import RecipeError
from tests.merge.test_methods import ref_combine, ref_l1, run

SHAPE = (10, 16)


def models(n: int, seed: int, scale: float = 0.3, shape=SHAPE) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return base, [base + scale * torch.randn(shape, generator=g) for _ in range(n)]


def close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol)


# ---- DELLA ------------------------------------------------------------------------------------

def ref_keep_probability(delta: torch.Tensor, density: float, eps: float) -> torch.Tensor:
    """p = density − ε + 2ε·rank/(n − 1) by |x| rank within each row (rank 0 = smallest)."""
    rows = delta.double().reshape(delta.shape[0], -1) if delta.dim() > 1 else delta.double().reshape(1, -1)
    p = torch.empty_like(rows)
    n = rows.shape[1]
    for i, row in enumerate(rows.tolist()):
        order = sorted(range(n), key=lambda j: (abs(row[j]), j))
        for rank, j in enumerate(order):
            p[i, j] = density - eps + 2 * eps * rank / (n - 1)
    return p.clamp(0, 1).reshape(delta.shape)


@pytest.mark.parametrize("name,consensus,normalize", [("della", True, True), ("della_linear", False, False)])
@pytest.mark.parametrize("paper", [False, True])
def test_della_matches_reference_given_its_draws(name, consensus, normalize, paper):
    base, xs = models(2, seed=1)
    params = [{"weight": 0.7, "density": 0.4, "epsilon": 0.1}, {"weight": 0.5, "density": 0.6, "epsilon": 0.2}]
    got = run(name, xs, base, params, {"paper_rescale": paper}, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # one uniform draw per model, in order
    deltas = []
    for x, p in zip(xs, params, strict=True):
        d = (x - base).double()
        prob = ref_keep_probability(d, p["density"], p["epsilon"])
        keep = torch.rand(SHAPE, generator=g).double() < prob
        deltas.append(d * keep / prob if paper else ref_l1(d, d * keep))
    want = ref_combine(base, deltas, [0.7, 0.5], consensus=consensus, normalize=normalize)
    close(got, want, rtol=1e-5, atol=1e-5)


def test_della_keeps_by_magnitude_rank_at_the_mean_density():
    base = torch.zeros(400, 500)
    delta = torch.arange(1.0, 501.0).repeat(400, 1)  # rank = column in every row
    out = run("della", [delta], base, [{"weight": 1.0, "density": 0.5, "epsilon": 0.3}], {"rescale": False},
              generator=torch.Generator().manual_seed(0))
    kept = (out != 0).double()
    assert abs(kept.mean().item() - 0.5) < 0.01
    assert abs(kept[:, :50].mean().item() - 0.23) < 0.03  # ranks 0–49: p from 0.2 to 0.26
    assert abs(kept[:, -50:].mean().item() - 0.77) < 0.03  # ranks 450–499: p from 0.74 to 0.8
    rescaled = run("della", [delta], base, [{"weight": 1.0, "density": 0.5, "epsilon": 0.3}],
                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(rescaled != 0, out != 0)  # same draws
    assert math.isclose(rescaled.abs().sum().item(), delta.abs().sum().item(), rel_tol=1e-5)  # L1 restored


def test_della_clips_probabilities_where_mergekit_refuses():
    base, (x,) = models(1, seed=2)
    out = run("della", [x], base, [{"weight": 1.0, "density": 0.9, "epsilon": 0.3}], {"rescale": False},
              generator=torch.Generator().manual_seed(1))
    d = x - base
    # p runs from 0.6 to 1.2, clipped at 1: the largest entry of each row is always kept
    top = d.abs().argmax(dim=1)
    assert torch.equal(out[torch.arange(SHAPE[0]), top], x[torch.arange(SHAPE[0]), top])
    assert torch.equal(run("della", [x], base, [{"weight": 1.0, "density": 1.0}]), x)  # density 1: unchanged


# ---- SCE --------------------------------------------------------------------------------------

def ref_sce(base: torch.Tensor, xs: list[torch.Tensor], topk: float) -> torch.Tensor:
    tv = torch.stack([x.double() - base.double() for x in xs])  # (models, *shape)
    if topk < 1:
        var = tv.var(dim=0, unbiased=False).reshape(-1)
        k = int(int((var != 0).sum()) * topk)
        mask = torch.zeros_like(var)
        mask[sorted(range(var.numel()), key=lambda i: (-float(var[i]), i))[:k]] = 1
        tv = tv * mask.reshape(base.shape)
    w = tv.square().reshape(len(xs), -1).mean(dim=1)
    w = torch.full_like(w, 1 / len(xs)) if abs(float(w.sum())) < 1e-6 else w / w.sum()
    elected = torch.where(tv.sum(dim=0) >= 0, 1.0, -1.0)
    agree = (torch.sign(tv) == elected).double() * w.reshape(-1, *[1] * base.dim())
    return base.double() + (tv * agree).sum(dim=0) / agree.sum(dim=0).clamp(min=1e-6)


@pytest.mark.parametrize("topk", [1.0, 0.3, 0.0])
def test_sce_matches_reference(topk):
    base, xs = models(3, seed=3)
    close(run("sce", xs, base, [{}] * 3, {"select_topk": topk}), ref_sce(base, xs, topk), atol=1e-6)


def test_sce_hand_case():
    base = torch.zeros(3)
    x1, x2 = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([3.0, -1.0, -1.0])
    # weights ∝ mean squares: 2 and 11/3 → 6/17 and 11/17; signs elected +, +, −
    out = run("sce", [x1, x2], base, [{}, {}])
    w1, w2 = 6 / 17, 11 / 17
    want = torch.tensor([(w1 * 1 + w2 * 3) / (w1 + w2), 2.0, -1.0])
    torch.testing.assert_close(out, want)


# ---- Karcher ----------------------------------------------------------------------------------

def ref_karcher(xs: list[torch.Tensor], max_iter: int = 10, tol: float = 1e-5) -> torch.Tensor:
    vs = [x.double().reshape(-1) for x in xs]
    norms = [float(v.norm()) for v in vs]
    units = [v / n for v, n in zip(vs, norms, strict=True) if n > tol]
    a = 1 / len(units)
    mean = sum(a * u for u in units)
    mean = mean / mean.norm()
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for u in units:
            c = float(mean @ u)
            th = math.acos(max(-1.0, min(1.0, c)))
            if th >= tol:
                tangent += a * th / math.sin(th) * (u - c * mean)
        tn = float(tangent.norm())
        if tn < tol:
            break
        mean = math.cos(tn) * mean + math.sin(tn) * tangent / tn
        mean = mean / mean.norm()
    return (sum(norms) / len(xs) * mean).reshape(xs[0].shape)


def test_karcher_matches_reference_and_hand_case():
    _, xs = models(3, seed=4, scale=1.0)
    close(run("karcher", xs, None, [{}] * 3), ref_karcher(xs))
    # two orthogonal unit vectors: the mean direction bisects them; the norm is the mean norm (1)
    out = run("karcher", [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])], None, [{}, {}])
    torch.testing.assert_close(out, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))


# ---- NuSLERP ----------------------------------------------------------------------------------

def ref_slerp_rows(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Slerp of each row of a and b (float64), linear where they are exactly colinear."""
    out = torch.empty_like(a)
    for i in range(a.shape[0]):
        u, v = a[i], b[i]
        c = float((u / u.norm().clamp(min=1e-7)) @ (v / v.norm().clamp(min=1e-7)))
        c = max(-1.0, min(1.0, c))
        if 1 - c * c <= 1e-16:
            out[i] = (1 - t) * u + t * v
        else:
            th = math.acos(c)
            out[i] = (math.sin((1 - t) * th) * u + math.sin(t * th) * v) / math.sin(th)
    return out


@pytest.mark.parametrize("with_base", [False, True])
@pytest.mark.parametrize("flatten,row_wise", [(True, False), (False, False), (False, True)])
def test_nuslerp_matches_reference(with_base, flatten, row_wise):
    base, xs = models(2, seed=5, scale=0.6)
    params = [{"weight": 1.0}, {"weight": 3.0}]  # t = 3/4
    got = run("nuslerp", xs, base if with_base else None, params,
              {"nuslerp_flatten": flatten, "nuslerp_row_wise": row_wise})
    a, b = (x.double() - (base.double() if with_base else 0) for x in xs)
    if flatten:
        want = ref_slerp_rows(0.75, a.reshape(1, -1), b.reshape(1, -1)).reshape(SHAPE)
    elif row_wise:  # mergekit's "row-wise" interpolates the vectors along dim 0 (columns)
        want = ref_slerp_rows(0.75, a.T, b.T).T
    else:
        want = ref_slerp_rows(0.75, a, b)
    close(got, want + (base.double() if with_base else 0))


def test_nuslerp_weights_summing_to_zero_give_the_midpoint():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    out = run("nuslerp", [a, b], None, [{"weight": 1.0}, {"weight": -1.0}])
    torch.testing.assert_close(out, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))


# ---- Multi-SLERP ------------------------------------------------------------------------------

def ref_multislerp(xs: list[torch.Tensor], weights: list[float], base: torch.Tensor | None) -> torch.Tensor:
    """The tangent-space barycentre at the weighted mean direction (the tangent average there is
    zero), scaled by the weighted mean norm."""
    w = torch.tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    origin = base.double() if base is not None else 0
    vs = [(x.double() - origin).reshape(-1) for x in xs]
    units = [v / (v.norm() + 1e-8) for v in vs]
    mean = sum(wi * u for wi, u in zip(w, units, strict=True))
    mean = mean / mean.norm()
    tangent = sum(wi * (u - (u @ mean) * mean) for wi, u in zip(w, units, strict=True))
    tn = float(tangent.norm()) + 1e-8
    out = mean * math.cos(tn) + tangent * math.sin(tn) / tn
    out = out * sum(wi * v.norm() for wi, v in zip(w, vs, strict=True))
    return out.reshape(xs[0].shape) + origin


@pytest.mark.parametrize("with_base", [False, True])
def test_multislerp_matches_reference(with_base):
    base, xs = models(3, seed=6, scale=0.6)
    weights = [0.2, 0.5, 0.3]
    got = run("multislerp", xs, base if with_base else None, [{"weight": w} for w in weights])
    close(got, ref_multislerp(xs, weights, base if with_base else None))


def test_multislerp_antipodal_inputs():
    a = torch.tensor([1.0, 2.0])
    two = run("multislerp", [a, -a], None, [{"weight": 1.0}, {"weight": 1.0}])
    torch.testing.assert_close(two, torch.zeros(2))  # two models fall back to linear
    with pytest.raises(RecipeError, match="weighted mean"):
        run("multislerp", [a, -a, a, -a], None, [{"weight": 1.0}] * 4)
    with pytest.raises(RecipeError, match="sum to zero"):
        run("multislerp", [a, a], None, [{"weight": 1.0}, {"weight": -1.0}])


# ---- NearSwap, Arcee Fusion, RAM --------------------------------------------------------------

def test_nearswap_matches_reference_and_hand_case():
    base, (x,) = models(1, seed=7)
    w = (0.1 / (base.double() - x.double()).abs().clamp(min=1e-6)).clamp(0, 1)
    close(run("nearswap", [x], base, [{}], {"t": 0.1}), w * x.double() + (1 - w) * base.double(), atol=1e-6)
    out = run("nearswap", [torch.tensor([1.0, 1.5, 5.0])], torch.zeros(3), [{}], {"t": 2.0})
    # |diff| 1 and 1.5 ≤ t: the other value whole; |diff| 5: weight 2/5
    torch.testing.assert_close(out, torch.tensor([1.0, 1.5, 2.0]))


def ref_arcee_fusion(base: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    b, o = base.double(), x.double()
    p = torch.softmax(o, dim=-1) + 1e-8
    q = torch.softmax(b, dim=-1) + 1e-8
    importance = (o - b).abs() * (p * (p / q).log()).sum(dim=-1, keepdim=True)
    s = importance.reshape(-1).sort().values
    q1, med, q3 = (s[int(f * (s.numel() - 1))] for f in (0.25, 0.5, 0.75))
    return b + (o - b) * (importance >= med + 1.5 * (q3 - q1))


def test_arcee_fusion_matches_reference():
    base, (x,) = models(1, seed=8, scale=0.5, shape=(40, 64))
    got = run("arcee_fusion", [x], base, [{}])
    close(got, ref_arcee_fusion(base, x), atol=1e-6)
    assert 0 < float((got != base).double().mean()) < 0.5  # only the outliers of importance move


def test_arcee_fusion_large_tensor_exact_quantiles(monkeypatch):
    """Above the direct-selection size the quantiles come from the bracketing selection."""
    from merge.methods import sparsify

    monkeypatch.setattr(sparsify, "DIRECT_SELECT_MAX", 1000)
    base, (x,) = models(1, seed=9, scale=0.5, shape=(60, 70))
    close(run("arcee_fusion", [x], base, [{}]), ref_arcee_fusion(base, x), atol=1e-6)


def ref_ram(base: torch.Tensor, xs: list[torch.Tensor], eps: float = 1e-5, r: float | None = None,
            alpha: float = 0.2) -> torch.Tensor:
    tv = [x.double() - base.double() for x in xs]
    changed = [d.abs() > eps for d in tv]
    count = sum(c.long() for c in changed)
    out = torch.zeros_like(base, dtype=torch.float64)
    for d, c in zip(tv, changed, strict=True):
        lam = 1.0
        if r is not None:
            shared, unique = int((c & (count > 1)).sum()), int((c & (count == 1)).sum())
            lam = 1 + r * min(max(shared / max(unique, eps), 0), alpha)
        out += torch.where(count == 1, d * c * lam, d * c / count.clamp(min=1))
    return base.double() + out


def sparse(n: int, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(SHAPE, generator=g)
    return base, [base + torch.randn(SHAPE, generator=g) * (torch.rand(SHAPE, generator=g) < 0.5) for _ in range(n)]


def test_ram_and_ramplus_match_reference():
    base, xs = sparse(3, seed=10)
    close(run("ram", xs, base, [{}] * 3), ref_ram(base, xs), atol=1e-6)
    close(run("ramplus_tl", xs, base, [{}] * 3), ref_ram(base, xs, r=0.1), atol=1e-6)
    close(run("ramplus_tl", xs, base, [{}] * 3, {"r": 0.5, "alpha": 2.0}), ref_ram(base, xs, r=0.5, alpha=2.0),
          atol=1e-6)


def test_ram_hand_case():
    base = torch.zeros(4)
    x1, x2 = torch.tensor([2.0, 4.0, 0.0, 1e-6]), torch.tensor([0.0, 2.0, 0.0, 0.0])
    # unique change kept whole, shared change averaged over who changed it, sub-epsilon dropped
    assert run("ram", [x1, x2], base, [{}, {}]).tolist() == [2.0, 3.0, 0.0, 0.0]
    # RAM+: x1 has 1 shared / 1 unique changed entries → λ = 1 + 0.1·min(1, 0.2) = 1.02
    plus = run("ramplus_tl", [x1, x2], base, [{}, {}])
    torch.testing.assert_close(plus, torch.tensor([2.04, 3.0, 0.0, 0.0]))
