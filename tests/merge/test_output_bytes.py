"""Golden output bytes: what each recipe writes on CPU, pinned as sha256 per output tensor.

Optimisations of the executor, reader, writer and methods must not change a single output
bit; these digests were computed by the code before the streaming/selection speed-ups. The
inputs are generated here from integer draws (exact in bf16, so no platform's float RNG is
involved) and include tensors above the sampled-selection and block sizes of
merge/methods/sparsify.py, so the bracketed threshold search, the block-wise trim with tied
magnitudes and the seeded random draws are all covered. Torch is held at two intra-op threads
because a float reduction's rounding may depend on how many chunks it is split into.

A deliberate change of results regenerates the table with
`python -m tests.merge.test_output_bytes` (and says so in its commit message).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

THREADS = 2
# (rows, cols) per tensor: vocab-sized ones exceed sparsify.BLOCK (1M elements), the MLP ones
# exceed DIRECT_SELECT_MAX (256K) but not BLOCK, the rest are small; layers 0 and 1 for slerp's t.
SHAPES = {
    "model.embed_tokens.weight": (1100, 1000),
    "model.layers.0.mlp.up_proj.weight": (600, 500),
    "model.layers.0.self_attn.q_proj.weight": (64, 64),
    "model.layers.0.input_layernorm.weight": (64,),
    "model.layers.1.mlp.up_proj.weight": (600, 500),
    "model.layers.1.self_attn.q_proj.weight": (64, 64),
    "model.layers.1.input_layernorm.weight": (64,),
    "model.norm.weight": (64,),
    "lm_head.weight": (1100, 1000),
}


def _int_tensor(shape, gen, lo: int, hi: int, scale: float) -> torch.Tensor:
    return torch.randint(lo, hi, shape, generator=gen).float() * scale


def make_inputs(root: Path) -> tuple[Path, Path, Path]:
    """A bf16 base and two sparse-delta experts; values on a power-of-two grid, so ties abound."""
    gen = torch.Generator().manual_seed(13)
    folders = [root / n for n in ("base", "expert1", "expert2")]
    base = {n: _int_tensor(s, gen, -128, 128, 2.0**-9) for n, s in SHAPES.items()}
    models = [base]
    for _ in range(2):
        models.append({n: t + _int_tensor(t.shape, gen, -16, 17, 2.0**-10)
                       * (torch.randint(0, 10, t.shape, generator=gen) < 6) for n, t in base.items()})
    for folder, tensors in zip(folders, models, strict=True):
        folder.mkdir(parents=True)
        save_file({n: t.to(torch.bfloat16).contiguous() for n, t in tensors.items()},
                  str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 2, "architectures": ["LlamaForCausalLM"]}))
    return folders[0], folders[1], folders[2]


def recipes(base: Path, e1: Path, e2: Path) -> dict[str, dict]:
    common = {"dtype": "float32", "out_dtype": "bfloat16"}
    sparse = [{"model": str(e1), "parameters": {"weight": 0.6, "density": 0.5}},
              {"model": str(e2), "parameters": {"weight": 0.4, "density": 0.3}}]
    return {
        "linear": {"merge_method": "linear", **common, "models": [
            {"model": str(base), "parameters": {"weight": 0.4}}, {"model": str(e1), "parameters": {"weight": 0.3}},
            {"model": str(e2), "parameters": {"weight": 0.3}}]},
        "linear_f32": {"merge_method": "linear", "models": [
            {"model": str(e1), "parameters": {"weight": 0.7}}, {"model": str(e2), "parameters": {"weight": 0.3}}],
            "dtype": "float32", "out_dtype": "float32"},
        "task_arithmetic": {"merge_method": "task_arithmetic", "base_model": str(base), **common, "models": [
            {"model": str(e1), "parameters": {"weight": 0.5}}, {"model": str(e2), "parameters": {"weight": 0.7}}]},
        "ties": {"merge_method": "ties", "base_model": str(base), **common, "models": sparse},
        "ties_rescale": {"merge_method": "ties", "base_model": str(base), **common, "models": sparse,
                         "parameters": {"rescale": True}},
        "breadcrumbs_ties": {"merge_method": "breadcrumbs_ties", "base_model": str(base), **common, "models": sparse},
        "dare_ties": {"merge_method": "dare_ties", "base_model": str(base), **common, "models": sparse,
                      "parameters": {"random_seed": 5}},
        "della": {"merge_method": "della", "base_model": str(base), **common, "parameters": {"random_seed": 3},
                  "models": [{"model": str(e1), "parameters": {"weight": 0.6, "density": 0.5, "epsilon": 0.15}},
                             {"model": str(e2), "parameters": {"weight": 0.4, "density": 0.4, "epsilon": 0.1}}]},
        "slerp": {"merge_method": "slerp", "base_model": str(base), **common,
                  "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.3]}, {"value": 0.6}]},
                  "models": [{"model": str(base)}, {"model": str(e1)}]},
    }


def output_digests(recipe: dict, out: Path) -> dict[str, str]:
    """Merge on CPU with two torch threads; sha256 (first 16 hex digits) of each output tensor's bytes."""
    from merge.executor import run_merge
    from merge.recipe import load_recipe

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        run_merge(load_recipe(recipe), out, device="cpu")
    finally:
        torch.set_num_threads(threads)
    tensors = load_file(str(out / "model.safetensors"))
    return {name: f"{t.dtype}:" + hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()[:16]
            for name, t in sorted(tensors.items())}


EXPECTED: dict[str, dict[str, str]] = {
    "linear": {
        "lm_head.weight": "torch.bfloat16:240c3448858576a3",
        "model.embed_tokens.weight": "torch.bfloat16:87b7ee345d5bc9bc",
        "model.layers.0.input_layernorm.weight": "torch.bfloat16:ec70bd8fc3842656",
        "model.layers.0.mlp.up_proj.weight": "torch.bfloat16:062205a3574b2d37",
        "model.layers.0.self_attn.q_proj.weight": "torch.bfloat16:09a3e7c6f50b855c",
        "model.layers.1.input_layernorm.weight": "torch.bfloat16:132fc60062faa347",
        "model.layers.1.mlp.up_proj.weight": "torch.bfloat16:1d44a48954cfdea3",
        "model.layers.1.self_attn.q_proj.weight": "torch.bfloat16:7a74d284b3f85d9d",
        "model.norm.weight": "torch.bfloat16:cd01f1e2c45b06c6"
    },
    "linear_f32": {
        "lm_head.weight": "torch.float32:c18c9b742050e2d7",
        "model.embed_tokens.weight": "torch.float32:de822242f9e10e88",
        "model.layers.0.input_layernorm.weight": "torch.float32:8043bf60cb9a42cf",
        "model.layers.0.mlp.up_proj.weight": "torch.float32:568ed94ed9f7af69",
        "model.layers.0.self_attn.q_proj.weight": "torch.float32:ce70930dcfea45ac",
        "model.layers.1.input_layernorm.weight": "torch.float32:d2993cca6044f98b",
        "model.layers.1.mlp.up_proj.weight": "torch.float32:fc8423eaad7c6771",
        "model.layers.1.self_attn.q_proj.weight": "torch.float32:a3da92d99d126679",
        "model.norm.weight": "torch.float32:28e1d36cc087c6c3"
    },
    "task_arithmetic": {
        "lm_head.weight": "torch.bfloat16:56a58796720cae55",
        "model.embed_tokens.weight": "torch.bfloat16:45de458ef9508091",
        "model.layers.0.input_layernorm.weight": "torch.bfloat16:0df4e0b2b4292bf5",
        "model.layers.0.mlp.up_proj.weight": "torch.bfloat16:549016e66370a4f7",
        "model.layers.0.self_attn.q_proj.weight": "torch.bfloat16:63602f5fda1e5741",
        "model.layers.1.input_layernorm.weight": "torch.bfloat16:06429e6ef7d9ec94",
        "model.layers.1.mlp.up_proj.weight": "torch.bfloat16:1b8f011d59fbcf39",
        "model.layers.1.self_attn.q_proj.weight": "torch.bfloat16:e908adecfe2cbe74",
        "model.norm.weight": "torch.bfloat16:98d68fe847967175"
    },
    "ties": {
        "lm_head.weight": "torch.bfloat16:6e7eaf2b64210d76",
        "model.embed_tokens.weight": "torch.bfloat16:328ab67ffd231c5c",
        "model.layers.0.input_layernorm.weight": "torch.bfloat16:6f3215634db0ff7d",
        "model.layers.0.mlp.up_proj.weight": "torch.bfloat16:b2000d6e811efb82",
        "model.layers.0.self_attn.q_proj.weight": "torch.bfloat16:8a1b2e1c43ce2bdc",
        "model.layers.1.input_layernorm.weight": "torch.bfloat16:5475f6a52a6a9f9e",
        "model.layers.1.mlp.up_proj.weight": "torch.bfloat16:5b5b36af0b1b05ae",
        "model.layers.1.self_attn.q_proj.weight": "torch.bfloat16:d8ba8f2903207141",
        "model.norm.weight": "torch.bfloat16:fbcd44a16afe7844"
    },
    "ties_rescale": {
        "lm_head.weight": "torch.bfloat16:9ade828529e9cf71",
        "model.embed_tokens.weight": "torch.bfloat16:4411716442e2d4e8",
        "model.layers.0.input_layernorm.weight": "torch.bfloat16:69cc71b1412ba02d",
        "model.layers.0.mlp.up_proj.weight": "torch.bfloat16:b0b617b46ec7e515",
        "model.layers.0.self_attn.q_proj.weight": "torch.bfloat16:0dc14e4584545d14",
        "model.layers.1.input_layernorm.weight": "torch.bfloat16:82128f37d37812ab",
        "model.layers.1.mlp.up_proj.weight": "torch.bfloat16:7cb1b549965e00e8",
        "model.layers.1.self_attn.q_proj.weight": "torch.bfloat16:fb32cbcc5f467ef9",
        "model.norm.weight": "torch.bfloat16:26b2ffee6c039280"
    },
    "breadcrumbs_ties": {
        "lm_head.weight": "torch.bfloat16:a2a2c9ae8ba7d571",
        "model.embed_tokens.weight": "torch.bfloat16:93ad8142e0ebe836",
        "model.layers.0.input_layernorm.weight": "torch.bfloat16:5a98c9f2b660b958",
        "model.layers.0.mlp.up_proj.weight": "torch.bfloat16:b0258072447cf6a7",
        "model.layers.0.self_attn.q_proj.weight": "torch.bfloat16:b5d17f987a677f46",
        "model.layers.1.input_layernorm.weight": "torch.bfloat16:a2377f820d7a2245",
        "model.layers.1.mlp.up_proj.weight": "torch.bfloat16:9c88fd9059d77887",
        "model.layers.1.self_attn.q_proj.weight": "torch.bfloat16:363b332252ab62ef",
        "model.norm.weight": "torch.bfloat16:c3ed793f2f6376ce"
    },
    "dare_ties": {
        "lm_head.weight": "torch.bfloat16:594937e6e39008d0",
        "model.embed_tokens.weight": "torch.bfloat16:acc0e213a747e2c6",
        "model.layers.0.input_layernorm.weight": "torch.bfloat16:deddee170df119d1",
        "model.layers.0.mlp.up_proj.weight": "torch.bfloat16:6080eaefc7dfb2fb",
        "model.layers.0.self_attn.q_proj.weight": "torch.bfloat16:239a0fe8b81e8295",
        "model.layers.1.input_layernorm.weight": "torch.bfloat16:495461bc9b4fe6af",
        "model.layers.1.mlp.up_proj.weight": "torch.bfloat16:f93f274f284e255a",
        "model.layers.1.self_attn.q_proj.weight": "torch.bfloat16:ae1a44914e67ee6e",
        "model.norm.weight": "torch.bfloat16:62f25ed18c1ebb94"
    },
    "della": {
        "lm_head.weight": "torch.bfloat16:e2acdecc7a589b2b",
        "model.embed_tokens.weight": "torch.bfloat16:9deef6cf90b735cf",
        "model.layers.0.input_layernorm.weight": "torch.bfloat16:cd538462f83f4788",
        "model.layers.0.mlp.up_proj.weight": "torch.bfloat16:e8de20ea8290126b",
        "model.layers.0.self_attn.q_proj.weight": "torch.bfloat16:50fa48af3ac8822e",
        "model.layers.1.input_layernorm.weight": "torch.bfloat16:e46733b834d1ba6a",
        "model.layers.1.mlp.up_proj.weight": "torch.bfloat16:a68b8a0ac3205e22",
        "model.layers.1.self_attn.q_proj.weight": "torch.bfloat16:a9ee6c34373db005",
        "model.norm.weight": "torch.bfloat16:881fb4e6a4ee3ad7"
    },
    "slerp": {
        "lm_head.weight": "torch.bfloat16:2be97712b2097126",
        "model.embed_tokens.weight": "torch.bfloat16:26e68232f68028e1",
        "model.layers.0.input_layernorm.weight": "torch.bfloat16:ea8657d0754c0fe9",
        "model.layers.0.mlp.up_proj.weight": "torch.bfloat16:be8fdf42f647ce34",
        "model.layers.0.self_attn.q_proj.weight": "torch.bfloat16:3019dc8d21d8bf08",
        "model.layers.1.input_layernorm.weight": "torch.bfloat16:99ffb7bf07781044",
        "model.layers.1.mlp.up_proj.weight": "torch.bfloat16:57285e911c6b0c8a",
        "model.layers.1.self_attn.q_proj.weight": "torch.bfloat16:a36ffae393412724",
        "model.norm.weight": "torch.bfloat16:7ddac74f92f57910"
    }
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path, Path]:
    return make_inputs(tmp_path_factory.mktemp("golden-inputs"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_output_bytes_match_golden(name, inputs, tmp_path):
    got = output_digests(recipes(*inputs)[name], tmp_path / "out")
    differing = [t for t in EXPECTED[name] if got.get(t) != EXPECTED[name][t]]
    assert set(got) == set(EXPECTED[name])
    assert not differing, f"{name}: output bytes changed for {differing}"


@pytest.mark.parametrize("name", ["linear", "linear_f32", "task_arithmetic"])
@pytest.mark.parametrize("piece", [1 << 18, 12_345])
def test_elementwise_methods_merged_in_row_pieces_write_the_golden_bytes(name, piece, inputs, tmp_path, monkeypatch):
    """Large tensors of elementwise methods are merged in row ranges (executor.PIECE_ELEMENTS);
    with pieces small enough to split every vocab-sized and MLP tensor here, at row boundaries
    that are and are not powers of two, not one bit changes."""
    import merge.executor as executor

    monkeypatch.setattr(executor, "PIECE_ELEMENTS", piece)
    got = output_digests(recipes(*inputs)[name], tmp_path / "out")
    assert got == EXPECTED[name]


def test_every_recipe_is_pinned(inputs):
    assert set(recipes(*inputs)) == set(EXPECTED)


def _regenerate() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folders = make_inputs(Path(tmp) / "in")
        table = {name: output_digests(r, Path(tmp) / f"out-{name}") for name, r in recipes(*folders).items()}
    sys.stdout.write("EXPECTED: dict[str, dict[str, str]] = " + json.dumps(table, indent=4) + "\n")


if __name__ == "__main__":
    _regenerate()
