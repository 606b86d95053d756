"""mergenet's methods against mergekit 0.1.5's own implementations, called on the same tensors.

mergekit is a test dependency (the `test` extra), so these never skip. Inputs are float32 and
so are both computations; deterministic methods agree within float32 rounding (karcher,
nuslerp and multislerp, whose steps round in a different order, within 1e-5 relative). The
randomized ones (DARE, DELLA) agree exactly when mergekit's `torch.bernoulli` is fed the same
uniform draws as mergenet's generator: that checks everything but the random source.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from mergekit.merge_methods import get as mergekit_method
from mergekit.merge_methods.base import TensorGroup

from merge.methods import METHODS

SHAPE = (12, 20)
EXACT = {"rtol": 2e-6, "atol": 1e-6}  # float32 rounding of a few operations
SPHERICAL = {"rtol": 1e-5, "atol": 1e-6}


def tensors(n: int, seed: int, shape=SHAPE, scale: float = 0.1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A base and n related models (base + scaled noise), float32."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return base, [base + scale * torch.randn(shape, generator=g) for _ in range(n)]


def ours(name: str, xs: list[torch.Tensor], base: torch.Tensor | None, shared: dict[str, Any] | None = None,
         per_model: dict[str, list[Any]] | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    method = METHODS[name]
    gp = {p.name: p.default for p in method.params if not p.per_model}
    gp.update(shared or {})
    mp = [{p.name: p.default for p in method.params if p.per_model} for _ in xs]
    for key, values in (per_model or {}).items():
        for d, v in zip(mp, values, strict=True):
            d[key] = v
    return method.fn([x.clone() for x in xs], None if base is None else base.clone(), mp, gp, generator)


def theirs(name: str, xs: list[torch.Tensor], base: torch.Tensor | None, shared: dict[str, Any] | None = None,
           per_model: dict[str, list[Any]] | None = None, base_as_input: bool = False) -> torch.Tensor:
    """mergekit's method on one tensor group; `base_as_input`: the base is an ordinary entry (as
    mergekit's planner adds it to methods that ignore the base)."""
    inputs = [base, *xs] if base is not None else list(xs)
    base_index = 0 if base is not None and not base_as_input else None
    group = TensorGroup.from_tensors([t.clone() for t in inputs], base_index=base_index)
    params = {**(shared or {}), **(per_model or {})}  # per-model lists bind to the non-base inputs in order
    (out,) = mergekit_method(name)([group], parameters=params)
    return out


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("select_topk", [1.0, 0.5, 0.1, 0.0])
def test_sce(n, select_topk):
    base, xs = tensors(n, seed=n)
    shared = {"select_topk": select_topk}
    torch.testing.assert_close(ours("sce", xs, base, shared), theirs("sce", xs, base, shared), **EXACT)


def test_sce_on_a_tensor_of_several_blocks():
    from merge.methods.sparsify import BLOCK

    # Past one CPU block (and not a multiple of it): the blockwise variance and erase steps must
    # give what whole-tensor arithmetic gives.
    base, xs = tensors(3, seed=11, shape=(BLOCK // 500 + 7, 1000))
    shared = {"select_topk": 0.5}
    torch.testing.assert_close(ours("sce", xs, base, shared), theirs("sce", xs, base, shared), **EXACT)


def test_sce_tiny_task_vectors_weigh_uniformly():
    base, xs = tensors(3, seed=5, scale=1e-4)  # mean squares ~1e-8: below mergekit's 1e-6 weight floor
    torch.testing.assert_close(ours("sce", xs, base), theirs("sce", xs, base), **EXACT)


@pytest.mark.parametrize("with_base", [False, True])
@pytest.mark.parametrize("max_iter", [1, 10])
def test_karcher(with_base, max_iter):
    base, xs = tensors(3, seed=7, scale=0.8)
    shared = {"max_iter": max_iter}
    got = ours("karcher", [base, *xs] if with_base else xs, None, shared)
    want = theirs("karcher", xs, base if with_base else None, shared, base_as_input=True)
    torch.testing.assert_close(got, want, **SPHERICAL)


@pytest.mark.parametrize("with_base", [False, True])
@pytest.mark.parametrize("flatten,row_wise", [(True, False), (False, False), (False, True)])
def test_nuslerp(with_base, flatten, row_wise):
    base, xs = tensors(2, seed=9, scale=0.5)
    shared = {"nuslerp_flatten": flatten, "nuslerp_row_wise": row_wise}
    per_model = {"weight": [0.3, 0.9]}
    b = base if with_base else None
    torch.testing.assert_close(ours("nuslerp", xs, b, shared, per_model), theirs("nuslerp", xs, b, shared, per_model),
                               **SPHERICAL)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("with_base", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_multislerp(n, with_base, normalize):
    base, xs = tensors(n, seed=11 + n, scale=0.5)
    shared = {"normalize_weights": normalize}
    per_model = {"weight": [0.2, 0.5, 0.3][:n]}
    b = base if with_base else None
    torch.testing.assert_close(ours("multislerp", xs, b, shared, per_model),
                               theirs("multislerp", xs, b, shared, per_model), **SPHERICAL)


@pytest.mark.parametrize("t", [0.001, 0.05, 1.0])
def test_nearswap(t):
    base, xs = tensors(1, seed=13)
    torch.testing.assert_close(ours("nearswap", xs, base, {"t": t}), theirs("nearswap", xs, base, {"t": t}), **EXACT)


@pytest.mark.parametrize("shape", [SHAPE, (37,), (3, 4, 5)])
def test_arcee_fusion(shape):
    base, xs = tensors(1, seed=17, shape=shape, scale=0.3)
    torch.testing.assert_close(ours("arcee_fusion", xs, base), theirs("arcee_fusion", xs, base), **EXACT)


def sparse_models(n: int, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Models that each change a random ~40% of the entries (some by less than epsilon), so that
    RAM sees unique, shared and unchanged entries."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(SHAPE, generator=g)
    xs = []
    for _ in range(n):
        delta = torch.randn(SHAPE, generator=g) * (torch.rand(SHAPE, generator=g) < 0.4)
        delta[0, :3] = 1e-6  # below the default epsilon: counts as unchanged
        xs.append(base + delta)
    return base, xs


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ram(n):
    base, xs = sparse_models(n, seed=19 + n)
    torch.testing.assert_close(ours("ram", xs, base), theirs("ram", xs, base), **EXACT)


@pytest.mark.parametrize("shared", [{}, {"r": 0.5, "alpha": 1.5, "epsilon": 0.01}])
def test_ramplus_tl(shared):
    base, xs = sparse_models(3, seed=23)
    torch.testing.assert_close(ours("ramplus_tl", xs, base, shared), theirs("ramplus_tl", xs, base, shared), **EXACT)


@pytest.mark.parametrize("name,shared", [
    ("dare_linear", {}), ("dare_ties", {}), ("dare_ties", {"rescale": False, "normalize": True}),
    ("della", {}), ("della_linear", {}), ("della", {"rescale": False, "lambda": 0.7}),
])
def test_randomized_methods_given_the_same_draws(name, shared, monkeypatch):
    """mergekit draws masks with torch.bernoulli(probabilities); feeding it uniforms from the
    generator mergenet uses (one draw per model, in order) must reproduce mergenet's result."""
    base, xs = tensors(3, seed=29)
    per_model = {"weight": [0.5, 0.3, 0.4], "density": [0.5, 0.35, 0.6]}
    if name.startswith("della"):
        per_model["epsilon"] = [0.1, 0.2, 0.15]
    got = ours(name, xs, base, shared, per_model, generator=torch.Generator().manual_seed(31))
    draws = torch.Generator().manual_seed(31)
    monkeypatch.setattr(torch, "bernoulli", lambda p: (torch.rand(p.shape, generator=draws) < p).to(p.dtype))
    want = theirs(name, xs, base, shared, per_model)
    torch.testing.assert_close(got, want, **EXACT)
