"""Eval harness: scoring on a model whose answers are known, against an independent direct
computation, and the CLI's handling of good and bad task files."""

from __future__ import annotations

import json

import pytest
import torch

from merge.eval import evaluate, exact_match, load_model, load_tasks, normalize
from merge.eval.tasks import TaskFileError
from tests.search.conftest import FACTS, write_jsonl


def test_normalize_and_first_answer():
    assert normalize("  The  Answer. ") == "the answer"
    assert exact_match("19\n3+4=7", "19")
    assert exact_match("19. more words", "19")
    assert not exact_match("1", "19")
    assert not exact_match("-5", "5")  # the sign is part of the answer
    assert exact_match("New York, then", "new york")


def test_generation_exact_match_on_memorized_facts(memorizer, tmp_path):
    rows = [{"prompt": p, "answer": a, "task": "right"} for p, a in FACTS.items()]
    rows += [{"prompt": p, "answer": str(int(a) + 1), "task": "wrong"} for p, a in FACTS.items()]
    model, tok = load_model(memorizer)
    result = evaluate(model, tok, load_tasks(write_jsonl(tmp_path / "t.jsonl", rows)), batch_size=4)
    assert result.n == 12
    assert result.tasks == {"right": 1.0, "wrong": 0.0}
    assert result.accuracy == 0.5
    assert result.correct == (True,) * 6 + (False,) * 6


def direct_logprob(model, tok, prompt: str, continuation: str) -> float:
    """Independent reference: one unpadded sequence, log-softmax, sum over continuation tokens."""
    ctx = tok(prompt)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ctx + cont])).logits[0]
    logp = torch.log_softmax(logits, -1)
    return sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))


def test_multiple_choice_matches_direct_computation(memorizer, tmp_path):
    model, tok = load_model(memorizer)
    rows, expected = [], []
    for k, (p, a) in enumerate(FACTS.items()):
        # choices of different token lengths, so padding and batching matter
        choices = [a, str(int(a) + 3), a + "0", "7"][k % 4:] + [a, str(int(a) + 3), a + "0", "7"][: k % 4]
        scores = [direct_logprob(model, tok, p, c) for c in choices]
        gold = choices.index(a)
        rows.append({"prompt": p, "choices": choices, "answer": gold, "task": "mc"})
        expected.append(max(range(len(choices)), key=scores.__getitem__) == gold)
    result = evaluate(model, tok, load_tasks(write_jsonl(tmp_path / "mc.jsonl", rows)), batch_size=5)
    assert list(result.correct) == expected
    assert result.accuracy == pytest.approx(sum(expected) / len(expected))
    assert result.accuracy >= 5 / 6  # the memorized answer almost always wins
    gold_lp = [direct_logprob(model, tok, r["prompt"], r["choices"][r["answer"]]) for r in rows]
    n_tokens = sum(len(tok(r["choices"][r["answer"]], add_special_tokens=False)["input_ids"]) for r in rows)
    assert result.loglik == pytest.approx(sum(gold_lp) / n_tokens, rel=1e-4)


def test_fitness_orders_accuracy_before_likelihood(memorizer, tmp_path):
    model, tok = load_model(memorizer)
    rows = [{"prompt": p, "answer": a} for p, a in FACTS.items()]
    result = evaluate(model, tok, load_tasks(write_jsonl(tmp_path / "t.jsonl", rows)))
    assert result.accuracy < result.fitness < result.accuracy + 1 / result.n


def test_cli_eval_json(cli, memorizer, tmp_path):
    rows = [{"prompt": p, "answer": a, "task": "mem"} for p, a in FACTS.items()]
    rows.append({"prompt": "3*4=", "choices": ["13", "12"], "answer": 1, "task": "mc"})
    res = cli("eval", memorizer, "--tasks", write_jsonl(tmp_path / "t.jsonl", rows), "--json", "--device", "cpu")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["n"] == 7 and doc["accuracy"] == 1.0
    assert doc["tasks"] == {"mem": 1.0, "mc": 1.0}


@pytest.mark.parametrize(("line", "field"), [
    ('{"prompt": "1+1="}', "'answer' is missing"),
    ('{"prompt": "", "answer": "2"}', "'prompt'"),
    ('{"prompt": "1+1=", "choices": ["2"], "answer": 0}', "'choices'"),
    ('{"prompt": "1+1=", "choices": ["2", "3"], "answer": 2}', "'answer' must be a choice index"),
    ('{"prompt": "1+1=", "answer": "2", "colour": "red"}', "unknown field 'colour'"),
    ("not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_task_file_exits_2_naming_line_and_field(cli, memorizer, tmp_path, line, field):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "2+2=", "answer": "4"}\n\n' + line + "\n")
    res = cli("eval", memorizer, "--tasks", path)
    assert res.code == 2
    assert f"{path} line 3" in res.err and field in res.err
    with pytest.raises(TaskFileError):
        load_tasks(path)


def test_missing_and_empty_task_files_exit_2(cli, memorizer, tmp_path):
    assert cli("eval", memorizer, "--tasks", tmp_path / "nope.jsonl").code == 2
    (tmp_path / "empty.jsonl").write_text("\n")
    res = cli("eval", memorizer, "--tasks", tmp_path / "empty.jsonl")
    assert res.code == 2 and "holds no tasks" in res.err


def test_bad_model_folder_exits_2(cli, tmp_path):
    tasks = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "1+1=", "answer": "2"}])
    res = cli("eval", tmp_path, "--tasks", tasks)
    assert res.code == 2 and "config.json" in res.err


def test_cli_eval_by_registry_id(cli, home, memorizer, tmp_path):
    import shutil

    from registry.local import LocalRegistry

    copy = tmp_path / "mem"
    shutil.copytree(memorizer, copy)
    reg = LocalRegistry(home)
    model_id = reg.submit(copy).id
    reg.close()
    tasks = write_jsonl(tmp_path / "t.jsonl", [{"prompt": p, "answer": a} for p, a in FACTS.items()])
    res = cli("eval", model_id, "--tasks", tasks, "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["accuracy"] == 1.0
