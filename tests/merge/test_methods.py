"""Each merge method against an independent float64 reference and hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from merge.methods import METHODS
from merge.methods.sparsify import DIRECT_SELECT_MAX, SAMPLE_SIZE, kth_largest, topk_mask


def grid(*shape: int, seed: int) -> torch.Tensor:
    """Random values on a 1/64 grid: exact in float32, so trimming order is unambiguous up to ties."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-40, 41, shape, generator=g).float() / 64


def run(name: str, tensors, base, params, global_params=None, generator=None) -> torch.Tensor:
    method = METHODS[name]
    gp = {p.name: p.default for p in method.params if not p.per_model}
    gp.update(global_params or {})
    full = []
    for p in params:
        d = {q.name: q.default for q in method.params if q.per_model}
        d.update(p)
        full.append(d)
    base = base.clone() if base is not None else None
    out = method.fn([t.clone() for t in tensors], base, full, gp, generator)
    return out


# ---- float64 references, written independently of merge/methods ------------------------------

def ref_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    flat = delta.reshape(-1).tolist()
    n = len(flat)
    k = n if density >= 1 else 0 if density <= 0 else max(1, int(density * n))
    order = sorted(range(n), key=lambda i: (-abs(flat[i]), i))  # largest first, lower index wins ties
    keep = set(order[:k])
    return torch.tensor([v if i in keep else 0.0 for i, v in enumerate(flat)], dtype=torch.float64).reshape(delta.shape)


def ref_breadcrumbs_trim(delta: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    flat = delta.reshape(-1).tolist()
    n = len(flat)
    target, top = int(density * n), int(gamma * n)
    bottom = max(0, n - target - top)
    order = sorted(range(n), key=lambda i: (-abs(flat[i]), i))  # rank 0 = largest
    keep = set(order[:n - bottom][max(0, n - bottom - target):])
    return torch.tensor([v if i in keep else 0.0 for i, v in enumerate(flat)], dtype=torch.float64).reshape(delta.shape)


def ref_combine(base, deltas, weights, consensus: bool, normalize: bool, lam: float = 1.0):
    base = base.double()
    weighted = [d.double() * w for d, w in zip(deltas, weights, strict=True)]
    if consensus:
        total = sum(weighted)
        elected = torch.where(total >= 0, 1.0, -1.0).double()
        agree = [torch.sign(d) == elected for d in weighted]
        mixed = sum(torch.where(a, d, 0.0) for a, d in zip(agree, weighted, strict=True))
        div = sum(a.double() * w for a, w in zip(agree, weights, strict=True))
        div = torch.where(div == 0, 1.0, div)
    else:
        mixed = sum(weighted)
        div = torch.full_like(base, sum(weights) if abs(sum(weights)) >= 1e-8 else 1.0)
    if normalize:
        mixed = mixed / div
    return base + lam * mixed


SHAPE = (6, 7)


@pytest.fixture
def trio():
    return grid(*SHAPE, seed=1), [grid(*SHAPE, seed=2), grid(*SHAPE, seed=3)]


def test_linear_matches_reference_and_hand_case(trio):
    base, xs = trio
    ws = [0.3, 0.9]
    got = run("linear", [base, *xs], None, [{"weight": 0.5}] + [{"weight": w} for w in ws])
    want = (0.5 * base.double() + 0.3 * xs[0].double() + 0.9 * xs[1].double()) / 1.7
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)
    hand = run("linear", [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])], None,
               [{"weight": 0.25}, {"weight": 0.75}], {"normalize": False})
    assert hand.tolist() == [2.5, 3.5]


def test_task_arithmetic_matches_reference(trio):
    base, xs = trio
    got = run("task_arithmetic", xs, base, [{"weight": 0.7}, {"weight": -0.2}], {"lambda": 1.5})
    want = ref_combine(base, [x - base for x in xs], [0.7, -0.2], consensus=False, normalize=False, lam=1.5)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("density", [0.0, 0.1, 0.37, 0.5, 1.0])
@pytest.mark.parametrize("normalize", [True, False])
def test_ties_matches_reference(trio, density, normalize):
    base, xs = trio
    params = [{"weight": 0.6, "density": density}, {"weight": 0.4, "density": density}]
    got = run("ties", xs, base, params, {"normalize": normalize})
    want = ref_combine(base, [ref_trim(x - base, density) for x in xs], [0.6, 0.4], consensus=True,
                       normalize=normalize)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)


def test_ties_hand_computed():
    base = torch.zeros(3)
    x1, x2 = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([-3.0, 1.0, 1.0])
    full = run("ties", [x1, x2], base, [{"weight": 1.0, "density": 1.0}] * 2)
    # summed mass [-2, -1, 4] elects [-, -, +]; agreeing deltas averaged: [-3, -2, (3+1)/2]
    assert full.tolist() == [-3.0, -2.0, 2.0]
    trimmed = run("ties", [x1, x2], base, [{"weight": 1.0, "density": 0.67}] * 2)
    # k = 2: x1 → [0, -2, 3]; x2 → [-3, 1, 0] (the tie |1| = |1| keeps the lower index)
    assert trimmed.tolist() == [-3.0, -2.0, 3.0]


@pytest.mark.parametrize("name,consensus", [("breadcrumbs", False), ("breadcrumbs_ties", True)])
def test_breadcrumbs_match_reference(trio, name, consensus):
    base, xs = trio
    params = [{"weight": 0.5, "density": 0.4, "gamma": 0.1}, {"weight": 0.8, "density": 0.6, "gamma": 0.05}]
    got = run(name, xs, base, params)
    deltas = [ref_breadcrumbs_trim(x - base, p["density"], p["gamma"]) for x, p in zip(xs, params, strict=True)]
    want = ref_combine(base, deltas, [0.5, 0.8], consensus=consensus, normalize=False)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)


def test_breadcrumbs_hand_computed():
    delta = torch.arange(1.0, 11.0)  # n=10, density .5 → keep 5; gamma .1 → drop the 1 largest
    out = run("breadcrumbs", [delta], torch.zeros(10), [{"weight": 1.0, "density": 0.5, "gamma": 0.1}])
    assert out.tolist() == [0, 0, 0, 0, 5, 6, 7, 8, 9, 0]


@pytest.mark.parametrize("name", ["dare_linear", "dare_ties"])
def test_dare_drops_and_restores_l1_norm_by_default(name):
    base = grid(200, 50, seed=4)
    x = base + 0.25  # every delta entry is exactly 0.25
    gen = torch.Generator().manual_seed(3)
    out = run(name, [x], base, [{"weight": 1.0, "density": 0.25}], generator=gen) - base
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.25) < 0.02
    # mergekit's rescale: survivors scaled so the task vector keeps its L1 norm (0.25 per entry)
    want = 0.25 * out.numel() / int(kept.sum())
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], want), rtol=1e-5, atol=0)
    assert math.isclose(out.abs().sum().item(), 0.25 * out.numel(), rel_tol=1e-4)
    again = run(name, [x], base, [{"weight": 1.0, "density": 0.25}], generator=torch.Generator().manual_seed(3))
    assert torch.equal(again - base, out)


@pytest.mark.parametrize("name", ["dare_linear", "dare_ties"])
def test_dare_paper_rescale_divides_by_density(name):
    base = grid(200, 50, seed=4)
    x = base + 0.25
    out = run(name, [x], base, [{"weight": 1.0, "density": 0.25}], {"paper_rescale": True},
              generator=torch.Generator().manual_seed(3)) - base
    kept = out != 0
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1.0))  # 0.25 / 0.25
    plain = run(name, [x], base, [{"weight": 1.0, "density": 0.25}], {"rescale": False},
                generator=torch.Generator().manual_seed(3)) - base
    assert torch.equal(plain != 0, kept)  # the same draws; no rescaling at all
    assert torch.allclose(plain[kept], torch.full_like(plain[kept], 0.25))


def ref_l1(delta: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """mergekit's rescaled_masked_tensor with the L1 norm (eps 1e-7), in float64."""
    before, after = delta.abs().sum(), masked.abs().sum()
    return masked if before < 1e-7 or after < 1e-7 else masked * (before / after)


@pytest.mark.parametrize("paper", [False, True])
def test_dare_ties_matches_reference_given_its_masks(trio, paper):
    base, xs = trio
    params = [{"weight": 0.6, "density": 0.5}, {"weight": 0.4, "density": 0.7}]
    got = run("dare_ties", xs, base, params, {"paper_rescale": paper}, generator=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)  # same draws, in the same order: one mask per model
    masks = [torch.rand(SHAPE, generator=g) < p["density"] for p in params]
    deltas = [(x - base).double() for x in xs]
    if paper:
        deltas = [d * m / p["density"] for d, m, p in zip(deltas, masks, params, strict=True)]
    else:
        deltas = [ref_l1(d, d * m) for d, m in zip(deltas, masks, strict=True)]
    want = ref_combine(base, deltas, [0.6, 0.4], consensus=True, normalize=False)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)


def ref_slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    a, b = v0.double().reshape(-1), v1.double().reshape(-1)
    dot = float((a / a.norm()) @ (b / b.norm()))
    if abs(dot) > 0.9995:
        return ((1 - t) * a + t * b).reshape(v0.shape)
    th = math.acos(dot)
    return ((math.sin((1 - t) * th) * a + math.sin(t * th) * b) / math.sin(th)).reshape(v0.shape)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 1.0])
def test_slerp_matches_reference(trio, t):
    base, xs = trio
    got = run("slerp", [xs[0]], base, [{}], {"t": t})
    torch.testing.assert_close(got.double(), ref_slerp(t, base, xs[0]), rtol=1e-5, atol=1e-6)


def test_slerp_hand_cases():
    out = run("slerp", [torch.tensor([0.0, 1.0])], torch.tensor([1.0, 0.0]), [{}], {"t": 0.5})
    torch.testing.assert_close(out, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))
    colinear = run("slerp", [torch.tensor([2.0, 4.0])], torch.tensor([1.0, 2.0]), [{}], {"t": 0.25})
    torch.testing.assert_close(colinear, torch.tensor([1.25, 2.5]))  # falls back to lerp


def ref_model_stock(base, xs, filter_wise: bool):
    w0 = base.double()
    rows = w0.reshape(w0.shape[0], -1) if filter_wise else w0.reshape(1, -1)
    ws = [x.double().reshape(rows.shape) for x in xs]
    out = torch.empty_like(rows)
    for r in range(rows.shape[0]):
        offs = [w[r] - rows[r] for w in ws]
        cos = [float(offs[i] @ offs[j] / max(float(offs[i].norm() * offs[j].norm()), 1e-6))
               for i in range(len(offs)) for j in range(i + 1, len(offs))]
        c = sum(cos) / len(cos)
        n = len(ws)
        t = n * c / (1 + (n - 1) * c)
        out[r] = t * sum(w[r] for w in ws) / n + (1 - t) * rows[r]
    return out.reshape(base.shape)


@pytest.mark.parametrize("filter_wise", [False, True])
def test_model_stock_matches_reference(filter_wise):
    base = grid(5, 8, seed=7)
    xs = [base + 0.5 * grid(5, 8, seed=s) + 0.25 for s in (8, 9, 10)]  # correlated task vectors
    got = run("model_stock", xs, base, [{}, {}, {}], {"filter_wise": filter_wise})
    torch.testing.assert_close(got.double(), ref_model_stock(base, xs, filter_wise), rtol=1e-5, atol=1e-6)


def test_model_stock_hand_cases():
    base = torch.zeros(2)
    same = run("model_stock", [torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])], base, [{}, {}])
    assert same.tolist() == [1.0, 1.0]  # cos = 1 → t = 1: the average
    ortho = run("model_stock", [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])], base, [{}, {}])
    assert ortho.tolist() == [0.0, 0.0]  # cos = 0 → t = 0: the base


def test_topk_mask_ties_and_large_tensor_selection():
    a = torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0])
    assert topk_mask(a, 2).tolist() == [False, True, True, False, False]
    big = torch.rand(DIRECT_SELECT_MAX + 12345, generator=torch.Generator().manual_seed(0))
    for k in (1, 1000, big.numel() // 3, big.numel() - 1):
        assert kth_largest(big, k) == big.kthvalue(big.numel() - k + 1).values
        assert int(topk_mask(big, k).sum()) == k
    # a sample that misleads the bracketing (every sampled entry is 0) must still give the exact answer
    step = max(1, big.numel() // SAMPLE_SIZE)
    tricky = big.clone()
    tricky[::step] = 0
    assert kth_largest(tricky, 5000) == tricky.kthvalue(tricky.numel() - 5000 + 1).values


def test_registry_is_explicit_and_complete():
    assert set(METHODS) == {"linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
                            "breadcrumbs_ties", "slerp", "model_stock", "passthrough", "della", "della_linear",
                            "sce", "karcher", "nuslerp", "multislerp", "nearswap", "arcee_fusion", "ram",
                            "ramplus_tl"}
    assert {n for n, m in METHODS.items() if m.randomized} == {"dare_ties", "dare_linear", "della", "della_linear"}
    assert all(m.reference.startswith("https://") for m in METHODS.values())


def stable_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Torch-sort reference for big tensors: keep the k largest |delta|, lower index first on ties."""
    flat = delta.double().reshape(-1)
    k = max(1, int(density * flat.numel()))
    order = torch.sort(flat.abs(), descending=True, stable=True).indices
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[order[:k]] = True
    return torch.where(keep, flat, 0.0).reshape(delta.shape)


@pytest.mark.parametrize("shape", [(3, 10_003), (2, DIRECT_SELECT_MAX // 2 + 7)])
def test_ties_blockwise_matches_reference_with_many_ties(shape, monkeypatch):
    """Tensors spanning many blocks, with magnitudes on a coarse grid so that thousands of entries
    tie at the trim threshold across block boundaries (and, for the second shape, past the size
    where the threshold is bracketed by sampling)."""
    from merge.methods import gta, sparsify

    monkeypatch.setattr(gta, "BLOCK", 4099)
    monkeypatch.setattr(sparsify, "BLOCK", 4099)
    base, xs = grid(*shape, seed=21), [grid(*shape, seed=22), grid(*shape, seed=23)]
    params = [{"weight": 0.7, "density": 0.41}, {"weight": 0.5, "density": 0.13}]
    got = run("ties", xs, base, params)
    deltas = [stable_trim(x - base, p["density"]) for x, p in zip(xs, params, strict=True)]
    want = ref_combine(base, deltas, [0.7, 0.5], consensus=True, normalize=True)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)
