"""`mergenet eval`, `search` and `fuse` through the CLI on real-shaped models: tokenizers without a
pad token, padded and tied vocabularies, renamed checkpoint tensors (GPT-NeoX) and two tokenizer
families fused into one target."""

from __future__ import annotations

import json
import shutil

import pytest

from merge.eval import evaluate, load_model, load_tasks
from tests.archs.fixtures import ARCHS
from tests.fusion.world import make_examples
from tests.fusion.world import write_jsonl as write_examples


@pytest.mark.parametrize("arch", ARCHS)
def test_cli_eval_json_is_the_same_at_every_batch_size(arch, cli, shaped, shaped_tasks):
    docs = []
    for batch in ("1", "3", "32"):
        res = cli("eval", shaped[arch][0], "--tasks", shaped_tasks, "--json", "--device", "cpu", "--batch-size", batch)
        assert res.code == 0, res.err
        docs.append(json.loads(res.out))
    first = docs[0]
    assert first["n"] == 12 and set(first["tasks"]) == {"gen", "mc"}
    assert first["tasks"]["gen"] == 1.0 and first["accuracy"] >= 0.9  # the base memorized the facts
    assert -1.0 < first["loglik"] <= 0.0
    for doc in docs[1:]:
        assert doc["accuracy"] == first["accuracy"] and doc["tasks"] == first["tasks"]
        assert doc["loglik"] == pytest.approx(first["loglik"], abs=1e-5)


def test_eval_names_a_token_the_embedding_lacks(cli, shaped, shaped_tasks, tmp_path):
    """A tokenizer with added tokens its model was never resized for: exit 2 naming the token,
    not torch's "index out of range in self"."""
    from transformers import AutoTokenizer

    folder = tmp_path / "mismatched"
    shutil.copytree(shaped["qwen2"][0], folder)
    tok = AutoTokenizer.from_pretrained(folder)
    rows = json.loads((folder / "config.json").read_text())["vocab_size"]
    extra = [f"<extra{i}>" for i in range(rows - len(tok) + 1)]  # the last one gets id `rows`: no row
    tok.add_tokens(extra)
    tok.save_pretrained(folder)
    tasks = tmp_path / "t.jsonl"
    tasks.write_text(json.dumps({"prompt": f"{extra[-1]} 12+7=", "answer": "19"}) + "\n")
    res = cli("eval", folder, "--tasks", tasks, "--device", "cpu")
    assert res.code == 2, res.err
    assert f"token id {rows}" in res.err and extra[-1] in res.err and "embedding has" in res.err


@pytest.mark.parametrize("arch", ARCHS)
def test_cli_search_runs_and_its_model_scores_what_was_logged(arch, cli, shaped, shaped_tasks, tmp_path):
    import yaml

    base, (e1, e2) = shaped[arch]
    recipe = tmp_path / "ties.yaml"
    recipe.write_text(yaml.safe_dump({
        "merge_method": "ties", "base_model": str(base), "dtype": "float32", "parameters": {"density": 0.7},
        "models": [{"model": str(e1), "parameters": {"weight": 0.5}},
                   {"model": str(e2), "parameters": {"weight": 0.5}}],
    }))
    out = tmp_path / "search"
    res = cli("search", recipe, "--eval", shaped_tasks, "--budget", "3", "-o", out, "--seed", "0",
              "--device", "cpu", "--batch-size", "4", "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["evaluations"] == 3 and doc["best"]["accuracy"] >= doc["start"]["accuracy"] >= 0.9
    # the written model is the candidate the search scored: same weights, same fitness
    model, tok = load_model(out / "model")
    best = evaluate(model, tok, load_tasks(shaped_tasks), batch_size=4)
    assert best.fitness == pytest.approx(doc["best"]["fitness"], abs=1e-6)


def test_cli_fuse_sentencepiece_and_bpe_sources_into_a_gpt2_target(cli, shaped, tmp_path):
    """Sources: a Mistral with a SentencePiece-style tokenizer and a Llama with a llama3-style BPE
    (both without a pad token, both with padded vocabularies); target: a GPT-2 with a third one."""
    data = write_examples(tmp_path / "train.jsonl", make_examples(16, seed=4))
    recipe = tmp_path / "fuse.yaml"
    recipe.write_text(
        f"target: {shaped['gpt2'][0]}\nsources: [{shaped['mistral'][0]}, {shaped['llama'][0]}]\n"
        f"data: {data}\ntop_k: 4\nfusion: min_ce\nlm_loss_weight: 0.5\nlr: 0.003\nepochs: 2\nbatch_size: 8\n"
        "max_length: 48\ndevice: cpu\n")
    out = tmp_path / "fused"
    res = cli("fuse", recipe, "-o", out, "--device", "cpu", "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert len(doc["aligned_fraction"]) == 2 and all(0.0 < f <= 1.0 for f in doc["aligned_fraction"])
    assert doc["after"]["lm_loss"] < doc["before"]["lm_loss"]
    model, tok = load_model(out)
    assert model.config.model_type == "gpt2" and tok.pad_token is None
