"""End to end: two tiny sources with different tokenizers (byte-level BPE and character-level) fused
into a gpt2-style target with a third tokenizer; restarts; the CLI with registry ids and --submit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from merge.fusion import load_recipe, run_fusion
from merge.fusion.capture import capture_model
from merge.fusion.data import file_sha256, load_examples

RECIPE = {"top_k": 8, "fusion": "min_ce", "lm_loss_weight": 0.5, "lr": 3e-3, "epochs": 2, "batch_size": 16,
          "max_length": 64, "device": "cpu"}
ALL_STEPS = {"capture-0", "capture-1", "capture-2", "align-1", "align-2", "fuse"}


def _recipe(world, **over):
    return load_recipe({"target": str(world["target"]), "sources": [str(world["src_bpe"]), str(world["src_char"])],
                        "data": str(world["train"]), **RECIPE, **over})


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def fused(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("fused")
    result = run_fusion(_recipe(world), root / "out", work_dir=root / "work")
    return result, root


def _heldout_ce(model: Path, data: Path) -> float:
    cap = capture_model(model, load_examples(data), top_k=1, max_length=64, batch_size=32)
    n_tokens = cap.topk_ids.shape[0]
    return float(cap.ce_sum.sum()) / n_tokens


def test_fused_target_learns_from_its_sources(fused, world):
    result, root = fused
    out = root / "out"
    # the sources' distributions were genuinely used on many target tokens, not only one-hot fallbacks
    assert all(f > 0.2 for f in result.aligned_fraction)
    assert result.after.fused_kl < result.before.fused_kl - 0.5
    assert result.after.lm_loss < result.before.lm_loss
    assert _heldout_ce(out, world["heldout"]) < _heldout_ce(world["target"], world["heldout"]) - 0.5
    card = (out / "README.md").read_text()
    assert file_sha256(world["train"]) in card and str(world["src_char"]) in card and "min_ce" in card
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.config.model_type == "gpt2"
    assert len(AutoTokenizer.from_pretrained(str(out))) == len(AutoTokenizer.from_pretrained(str(world["target"])))
    assert not any(p.name.startswith(".out") for p in root.iterdir())  # no temp folders left


def test_rerun_reuses_every_saved_step(fused, world):
    _, root = fused
    again = run_fusion(_recipe(world), root / "again", work_dir=root / "work")
    assert set(again.reused) >= ALL_STEPS and "train-epochs-2" in again.reused
    first, second = _weights(root / "out"), _weights(root / "again")
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_changed_setting_recomputes_only_what_depends_on_it(fused, world, tmp_path):
    _, root = fused
    work = tmp_path / "work"
    shutil.copytree(root / "work", work)
    result = run_fusion(_recipe(world, fusion="avg_ce", epochs=1), tmp_path / "out", work_dir=work)
    assert set(result.reused) == ALL_STEPS - {"fuse"}
    assert result.mean_weights[0] < 1.0 and all(0 < w < 1 for w in result.mean_weights)


def test_interrupted_training_resumes_to_the_same_weights(fused, world, tmp_path):
    _, root = fused

    class Stop(Exception):
        pass

    def stop_at_last_step(done: int, total: int) -> None:
        if done == total:  # the last optimizer step: epoch 1 is checkpointed, epoch 2 is not
            raise Stop

    work = tmp_path / "work"
    work.mkdir()
    for step_output in (root / "work").glob("*.safetensors"):  # reuse steps 1-2; training starts afresh
        shutil.copy2(step_output, work / step_output.name)
    with pytest.raises(Stop):
        run_fusion(_recipe(world), tmp_path / "out", work_dir=work, progress=stop_at_last_step)
    assert not (tmp_path / "out").exists()
    resumed = run_fusion(_recipe(world), tmp_path / "out", work_dir=work)
    assert "train-epochs-1" in resumed.reused
    assert resumed.before == fused[0].before  # the untrained target's metrics, kept from the first run
    reference, got = _weights(root / "out"), _weights(tmp_path / "out")
    assert all(torch.equal(reference[k], got[k]) for k in reference)


def test_cli_fuse_with_registry_ids_and_submit(cli, world, home, tmp_path):
    from registry.local import LocalRegistry

    ids = []
    for name in ("src_bpe", "src_char"):
        copy = tmp_path / name
        shutil.copytree(world[name], copy)
        ids.append(LocalRegistry(home).submit(copy).id)
    recipe = tmp_path / "fuse.yaml"
    recipe.write_text(f"target: {world['target']}\nsources: [{ids[0]}, {ids[1]}]\ndata: {world['train']}\n"
                      "fusion: avg_ce\nepochs: 1\nbatch_size: 32\nmax_length: 64\nlr: 0.003\n")
    res = cli("fuse", recipe, "-o", tmp_path / "out", "--submit", "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["after"]["fused_kl"] < doc["before"]["fused_kl"]
    record = LocalRegistry(home).get(doc["id"])
    assert record.kind == "merged"
    prov = record.manifest.provenance
    assert prov["method"] == "fusion" and set(ids) <= set(prov["inputs"])
    assert prov["data_sha256"] == file_sha256(world["train"]) and prov["recipe"]["sources"] == ids
    assert doc["sources"] == ids and all(i in (tmp_path / "out" / "README.md").read_text() for i in ids)
    assert not list(tmp_path.glob(".out.*"))  # the default work dir with the materialized inputs is gone


def test_cli_fuse_on_the_shared_family_fixtures(cli, families, tmp_path):
    from tests.fusion.world import make_examples, write_jsonl

    write_jsonl(tmp_path / "train.jsonl", make_examples(32, seed=3))
    recipe = tmp_path / "fuse.yaml"
    # three architectures; the family fixtures share one tokenizer, so alignment is near one-to-one
    recipe.write_text(f"target: {families['gpt2'][0]}\n"
                      f"sources: [{families['llama'][1][0]}, {families['qwen2'][1][1]}]\n"
                      "data: train.jsonl\nepochs: 1\nbatch_size: 16\nmax_length: 48\nlr: 0.003\nfusion: avg_ce\n")
    res = cli("fuse", recipe, "-o", tmp_path / "out")
    assert res.code == 0, res.err
    assert "fused 2 source(s)" in res.out and "LM loss" in res.out
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "README.md").is_file()
