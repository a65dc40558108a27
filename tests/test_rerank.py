"""Second-stage reranking: LCR's confidence, bins and order on hand-made answers; both rerankers over an
endpoint whose answers the test states and over the tiny reasoner; reranking in evaluation, index
search, the CLI and the demo."""

from __future__ import annotations

import json
import re

import pytest
from chat_server import ChatServer, choices, first_token, text_of

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.core.text import normalize_answer
from embedrl.rerank import load_reranker
from embedrl.rerank.lcr import confidence_bin, extract_answer, lcr_order, mscp, semantic_clusters

# ---------------------------------------------------------------- the computations, by hand


def test_confidence_is_the_largest_clusters_share_of_fixed_samples():
    answers = ["Paris", "paris.", "The Paris", "Lyon", "Paris, France", "Marseille"]
    # equal after normalising (case, punctuation, articles): one cluster without asking anyone
    assert semantic_clusters([answers], ["capital?"]) == [[3, 1, 1, 1]]
    assert mscp([3, 1, 1, 1]) == 0.5

    asked = []

    def judge(asks):  # "paris france" and "paris" entail each other; nothing else does
        asked.extend(asks)
        return [{normalize_answer(a), normalize_answer(b)} <= {"paris", "paris france"} for _, a, b in asks]

    sizes = semantic_clusters([answers, ["x", "y"]], ["capital?", "other?"], judge)
    assert sizes == [[4, 1, 1], [1, 1]] and mscp(sizes[0]) == pytest.approx(4 / 6)
    # each distinct answer asked both ways against the clusters so far, with its own input's question
    assert ("capital?", "Lyon", "Paris") in asked and ("capital?", "Paris", "Lyon") in asked
    assert ("other?", "y", "x") in asked and not any(q == "other?" and "Paris" in (a, b) for q, a, b in asked)
    # one direction is not enough
    assert semantic_clusters([["red", "crimson"]], ["q"], lambda asks: [a == "red" for _, a, _ in asks]) == [[1, 1]]
    assert extract_answer("<thinking>{}</thinking><rethink>r</rethink><answer>Paris</answer>") == "Paris"


def test_bins_and_order_keep_the_first_stage_within_a_bin_and_for_confident_queries():
    assert [confidence_bin(c, t_upper=0.7, t_lower=0.3) for c in (1.0, 0.7, 0.5, 0.3, 0.1)] == [1, 1, 0, -1, -1]
    bins = [-1, 0, 1, 0, 1, -1]
    assert lcr_order(bins, query_confidence=0.4, t_query=0.9) == [2, 4, 1, 3, 0, 5]
    assert lcr_order(bins, query_confidence=0.9, t_query=0.9) == list(range(6))  # confident: kept
    assert lcr_order(bins, query_confidence=1.0, t_query=0.0) == list(range(6))  # t_query 0: never reorders
    assert lcr_order(bins, query_confidence=1.0, t_query=1.01) == [2, 4, 1, 3, 0, 5]  # above 1: always


def test_bad_thresholds_and_names_are_clear_errors():
    with pytest.raises(EmbedrlError, match="t_lower <= t_upper"):
        load_reranker("lcr", "openai:http://x/v1#m", ["t_upper=0.2", "t_lower=0.5"])
    with pytest.raises(EmbedrlError, match="unknown config key.*samples"):
        load_reranker("lcr", "openai:http://x/v1#m", ["sample=3"])
    with pytest.raises(EmbedrlError, match="unknown reranker"):
        load_reranker("bm25", "openai:http://x/v1#m")
    with pytest.raises(EmbedrlError, match="not an http"):
        load_reranker("lcr", "openai:ftp://x/v1#m")


# ---------------------------------------------------------------- over an endpoint


def _candidate(text: str) -> str:
    return text.split("Candidate:\n", 1)[1].split("\n", 1)[0] if "Candidate:\n" in text else ""


def lcr_model(body):
    """Answers every LCR question: sure of Paris alone; with a candidate, as sure as its text says."""
    text = text_of(body)
    if text.startswith("We are evaluating answers"):
        first, second = re.search(r"Answer 1: (.*)\nAnswer 2: (.*)\n", text).groups()
        return choices(["Entailment." if {first, second} <= {"red", "crimson"} else "neutral"])
    n, candidate = body["n"], _candidate(text)
    if not candidate:
        answers = ["Paris"] * n if "capital" in text else [f"guess {i}" for i in range(n)]
    elif candidate.startswith("gold"):  # two wordings of one answer: only an entailment judge joins them
        answers = ["red"] * (n // 2) + ["crimson"] * (n - n // 2)
    elif candidate.startswith("half"):
        answers = ["blue"] * (n // 2) + [f"other {i}" for i in range(n - n // 2)]
    else:
        answers = [f"noise {i}" for i in range(n)]
    return choices(answers)


QUERIES = [Item(text="Which shape is red?"), Item(text="What is the capital of France?")]
CANDIDATES = [[Item(text=t) for t in ("noise a", "half b", "gold c", "half d")]] * 2


def test_lcr_over_an_endpoint_bins_candidates_by_confidence_and_caches_it(tmp_path):
    with ChatServer(lcr_model) as server:
        reranker = load_reranker("lcr", f"openai:{server.url}#m", cache=tmp_path / "scores.sqlite")
        first = reranker.rerank(QUERIES, CANDIDATES, [[0.4, 0.3, 0.2, 0.1]] * 2)
        # C = 0.1 (noise), 0.5 (half), 1.0 (gold: red and crimson entail each other): bins -1, 0, +1, 0
        assert first[0].order == [2, 1, 3, 0] and first[0].scores == [-1.0, 0.0, 1.0, 0.0]
        assert first[0].detail["confidences"] == [0.1, 0.5, 1.0, 0.5]
        # the model answers the second query alone with certainty: the first stage's order stands, and
        # its candidates are never asked about
        assert first[1].order == [0, 1, 2, 3] and first[1].detail == {"query_confidence": 1.0, "kept": True}
        sampled = [r for r in server.requests if r["temperature"] > 0]
        assert len(sampled) == 2 + 4 and all(r["n"] == 10 and r["temperature"] == 1.0 for r in sampled)
        # a rerun, and other thresholds, read the cached confidences: nothing is asked again
        asked = len(server.requests)
        assert reranker.rerank(QUERIES, CANDIDATES, [[0.4, 0.3, 0.2, 0.1]] * 2)[0].order == [2, 1, 3, 0]
        looser = load_reranker("lcr", f"openai:{server.url}#m", ["t_upper=0.5"], cache=tmp_path / "scores.sqlite")
        assert looser.rerank(QUERIES[:1], CANDIDATES[:1], [[0.4, 0.3, 0.2, 0.1]])[0].order == [1, 2, 3, 0]
        assert len(server.requests) == asked and looser.computed == 0
        # without the entailment judge, red and crimson are two clusters: gold falls to C = 0.5, bin 0
        exact = load_reranker("lcr", f"openai:{server.url}#m", ["entailment=exact"], cache=None)
        assert exact.rerank(QUERIES[:1], CANDIDATES[:1], [[0.4, 0.3, 0.2, 0.1]])[0].order == [1, 2, 3, 0]


def yes_model(body):
    """P(Yes) by the candidate's text: gold 0.9, half 0.5, else 0.1."""
    candidate = _candidate(text_of(body))
    p = 0.9 if candidate.startswith("gold") else 0.5 if candidate.startswith("half") else 0.1
    return first_token({"Yes": p * 0.8, " no": (1 - p) * 0.8, "Maybe": 0.2})


def test_yes_prob_over_an_endpoint_sorts_by_the_probability_of_yes(tmp_path):
    with ChatServer(yes_model) as server:
        reranker = load_reranker("yes-prob", f"openai:{server.url}#m", cache=tmp_path / "scores.sqlite")
        result = reranker.rerank(QUERIES[:1], CANDIDATES[:1], [[0.4, 0.3, 0.2, 0.1]])[0]
        assert result.order == [2, 1, 3, 0]  # the two halves keep the first stage's order
        assert result.scores == pytest.approx([0.1, 0.5, 0.9, 0.5])  # "Maybe" counts for neither
        assert all(r["max_tokens"] == 1 and r["logprobs"] and r["top_logprobs"] == 20 for r in server.requests)


# ---------------------------------------------------------------- over the tiny reasoner


def test_both_rerankers_run_on_the_tiny_reasoner_and_reuse_their_scores(tiny_reasoner_dir, synth_tiny_dir, tmp_path):
    from embedrl.data.readers import read_task
    from embedrl.data.registry import load_registry
    from embedrl.models.chat import HFChat, text_chat
    from embedrl.models.reasoner import load_reasoner

    spec = next(s for s in load_registry(synth_tiny_dir / "registry.yaml") if s.name == "Synth-T2I")
    task = read_task(spec, synth_tiny_dir).head(2)
    lists = [[task.candidates[i] for i in cands[:3]] for cands in task.local_candidates]
    reasoner = load_reasoner(str(tiny_reasoner_dir))
    chat = HFChat(reasoner)
    replies = chat.complete([text_chat("Name a colour.")], n=3, temperature=1.0, max_new_tokens=4, seed=0)
    assert len(replies) == 1 and len(replies[0]) == 3
    yes, no = chat.first_token_probs([text_chat("Yes or no?")], ["Yes", "No"])[0]
    assert 0 <= yes and 0 <= no and yes + no <= 1
    for name, options in (("lcr", ["samples=3", "max_new_tokens=6", "t_query=1.01"]), ("yes-prob", [])):
        reranker = load_reranker(name, reasoner, options, cache=tmp_path / "scores.sqlite")
        results = reranker.rerank(task.queries, lists, [[0.3, 0.2, 0.1]] * 2)
        assert [sorted(r.order) for r in results] == [[0, 1, 2]] * 2 and len(results[0].scores) == 3
        computed = reranker.computed
        assert computed == (2 + 6 if name == "lcr" else 6)
        again = load_reranker(name, reasoner, options, cache=tmp_path / "scores.sqlite")
        assert [r.order for r in again.rerank(task.queries, lists, [[0.3, 0.2, 0.1]] * 2)] == [r.order for r in results]
        assert again.computed == 0


# ---------------------------------------------------------------- evaluation, index, CLI, demo


def gold_model(golds: set[str]):
    """yes-prob's model that knows the right answers."""
    def reply(body):
        p = 0.9 if _candidate(text_of(body)) in golds else 0.1
        return first_token({"Yes": p, "No": 1 - p})
    return reply


def _text_task(root) -> object:
    """Eight text queries, each with its gold and three wrong answers, as MMEB local rows."""
    from embedrl.data.registry import DatasetSpec, dump_registry

    rows = [{"qry_inst": "Find the answer.", "qry_text": f"question {i}", "qry_img_path": "", "tgt_inst": "",
             "tgt_text": [f"gold {i}", f"wrong {i} a", f"wrong {i} b", f"wrong {i} c"], "tgt_img_path": [""] * 4}
            for i in range(8)]
    (root / "Toy-QA.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = DatasetSpec("Toy-QA", "image", "I-QA", "image_rows", "local", "hit@1", "Toy-QA.jsonl", media_root=".")
    (root / "registry.yaml").write_text(dump_registry([spec]))
    return root / "registry.yaml"


def test_evaluation_reranks_the_top_k_and_reports_the_first_stage_and_the_cost(tiny_clip_dir, tmp_path, capsys):
    from embedrl.cli import main

    registry = _text_task(tmp_path)
    golds = {f"gold {i}" for i in range(8)}
    with ChatServer(gold_model(golds)) as server:
        assert main(["eval", "mmeb", "--model", str(tiny_clip_dir), "--registry", str(registry), "--data-root",
                     str(tmp_path), "--out", str(tmp_path / "out"), "--rerank", "yes-prob", "--rerank-k", "4",
                     "--rerank-model", f"openai:{server.url}#m", "--no-report"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    score = results["metrics"]["image"]["Toy-QA"]
    # a reranker that knows the answers puts every gold first; the first stage alone did not
    assert score["hit@1"] == 1.0 and score["first_stage"]["hit@1"] < 1.0
    assert f"Toy-QA: hit@1 {100 * score['first_stage']['hit@1']:.1f} -> 100.0 after yes-prob@4" in printed
    cost = score["rerank"]
    assert cost["reordered"] > 0 and cost["seconds_per_query"] > 0
    assert cost["cost_ratio"] == pytest.approx(cost["seconds_per_query"] / cost["first_stage_seconds_per_query"])
    assert results["metadata"]["rerank"] == {"name": "yes-prob", "k": 4}
    rows = [json.loads(line) for line in (tmp_path / "out" / "image" / "Toy-QA_pred.jsonl").read_text().splitlines()]
    assert all(row["prediction"][0] == row["label"][0] for row in rows)
    assert sorted(rows[0]["first_stage"]) == sorted(rows[0]["prediction"]) and len(rows[0]["rerank_scores"]) == 4
    # the same --out without reranking (or with another k) is another run: refused, not resumed
    for other in ([], ["--rerank", "yes-prob", "--rerank-k", "3", "--rerank-model", "openai:http://127.0.0.1:9/v1#m"]):
        assert main(["eval", "mmeb", "--model", str(tiny_clip_dir), "--registry", str(registry), "--data-root",
                     str(tmp_path), "--out", str(tmp_path / "out"), *other, "--no-report"]) == 1
        assert "differs in reranking" in capsys.readouterr().err


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, synth_tiny_dir, tiny_clip_dir):
    from demo_helpers import build_small_index

    return build_small_index(synth_tiny_dir, tiny_clip_dir, tmp_path_factory.mktemp("rerank") / "index")


def test_search_moves_the_answer_up_and_says_where_it_was(small_index, tmp_path, capsys):
    from embedrl.cli import main
    from embedrl.demo.backend import DemoBackend
    from embedrl.index.search import Retriever

    retriever = Retriever.from_dir(small_index)
    query = Item(text="a small shape")
    first = retriever.search(query, k=10)[0]
    texts = [h.item.get("text", "") for h in first]
    assert texts[6] and texts.count(texts[6]) == 1  # a text item, told apart by its text
    wanted = texts[6]
    with ChatServer(gold_model({wanted})) as server:
        reranker = load_reranker("yes-prob", f"openai:{server.url}#m", cache=None)
        hits = retriever.search(query, k=5, reranker=reranker, rerank_k=10)[0]
        assert len(hits) == 5 and hits[0].item["text"] == wanted and hits[0].first_rank == 7
        assert hits[0].rerank_score == pytest.approx(0.9) and [h.first_rank for h in hits[1:]] == [1, 2, 3, 4]
        # the demo shows each result's move from the first stage
        result = DemoBackend(retriever, reranker, rerank_k=10).query(text="a small shape", k=4)
        assert result.moves == ["▲6", "▼1", "▼1", "▼1"] and "rerank" in result.timings
        assert main(["-q", "index", "search", str(small_index), "--text", "a small shape", "-k", "3", "--no-tcot",
                     "--rerank", "yes-prob", "--rerank-model", f"openai:{server.url}#m",
                     "--tcot-cache", str(tmp_path / "c.sqlite")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[0]["item"]["text"] == wanted and printed[0]["first_rank"] == 7
    retriever.close()
    assert main(["index", "search", str(small_index), "--text", "x", "--rerank", "yes-prob"]) == 1
    assert "needs a model" in capsys.readouterr().err


def test_ablation_scores_each_first_stage_alone_and_reranked_on_the_same_queries(tmp_path, synth_tiny_dir):
    from embedrl.lab.ablation.config import AblationConfig
    from embedrl.lab.ablation.run import run_ablation

    def longer_is_likelier(body):  # a model with an opinion: the longer the candidate's text, the likelier
        p = min(0.9, 0.1 + len(_candidate(text_of(body))) / 200)
        return first_token({"Yes": p, "No": 1 - p})

    out = tmp_path / "out"
    with ChatServer(longer_is_likelier) as server:
        report = run_ablation(AblationConfig(
            out=str(out), data=str(synth_tiny_dir), variants=["raw"], seeds=[0], eval_queries=None,
            datasets=["Synth-I2T", "Synth-VideoRet"], embedder_overrides=["max_steps=2", "per_device_train_batch_size=8"],
            rerankers=["yes-prob"], rerank_model=f"openai:{server.url}#m", rerank_queries=5, rerank_k=4))
    row = report["rerank"]["yes-prob"]["raw"]
    runs = json.loads((out / "seed0" / "rerank_yes-prob_raw.json").read_text())
    raw_hits = json.loads((out / "raw.hits.json").read_text())
    for name, result in runs.items():
        # the first stage alone is the table's (a) row, on the first 5 queries
        assert result["first"]["hit@1"] == raw_hits[name][:5] and result["queries"] == 5
    assert row["first hit@1"]["mean"] == pytest.approx(
        100 * sum(sum(r["first"]["hit@1"]) / 5 for r in runs.values()) / 2)
    assert set(row["per_set"]) == {"Synth-I2T", "Synth-VideoRet"} and row["cost"]["seconds_per_query"] > 0
    assert 0 < row["cost"]["reordered_share"] <= 1
    assert "| yes-prob | (a) raw input |" in (out / "ablation.md").read_text()


def test_bench_rerank_times_each_reranker_against_the_first_stage(tiny_clip_dir, tiny_reasoner_dir, synth_tiny_dir,
                                                                  tmp_path, capsys):
    from embedrl.cli import main

    assert main(["-q", "bench", "rerank", "--model", str(tiny_clip_dir), "--data", str(synth_tiny_dir),
                 "--reasoner", str(tiny_reasoner_dir), "--rerank", "yes-prob", "lcr", "--rerank-option",
                 "lcr:samples=2", "--rerank-option", "lcr:max_new_tokens=4", "--queries", "2",
                 "--datasets", "Synth-CLS", "--json", str(tmp_path / "bench.json")]) == 0
    assert "| set | queries | first stage s/query | yes-prob s/query | × first stage | lcr s/query |" in \
        capsys.readouterr().out
    row = json.loads((tmp_path / "bench.json").read_text())[0]
    assert row["set"] == "Synth-CLS" and row["queries"] == 2 and row["first_stage_s"] > 0
    assert set(row["rerank"]) == {"yes-prob", "lcr"} and all(r["seconds_per_query"] > 0 for r in row["rerank"].values())
    assert main(["bench", "rerank", "--model", "m", "--data", "d", "--rerank-option", "bm25:x=1",
                 "--rerank-model", "openai:http://x/v1#m"]) == 1


def test_the_search_route_reranks_unless_asked_not_to(small_index, tiny_clip_dir):
    import httpx
    from serve_helpers import serving

    from embedrl.models.base import load_embedder

    embedder = load_embedder(str(tiny_clip_dir))
    with ChatServer(gold_model(set())) as model:
        with serving(embedder, {"shapes": str(small_index)}, rerank="yes-prob", rerank_k=10,
                     rerank_model=f"openai:{model.url}#m") as (url, _):
            plain = httpx.post(f"{url}/v1/search", json={"query": "a small shape", "k": 10, "rerank": False}).json()
            texts = [h["item"].get("text", "") for h in plain["hits"]]
            assert plain["rerank"] is None and texts[6] and texts.count(texts[6]) == 1
            model.reply = gold_model({texts[6]})
            found = httpx.post(f"{url}/v1/search", json={"query": "a small shape", "k": 3}).json()
    assert found["rerank"] == "yes-prob" and "rerank" in found["timings_ms"] and len(found["hits"]) == 3
    assert [(h["rank"], h["first_rank"]) for h in found["hits"]] == [(1, 7), (2, 1), (3, 2)]
    assert found["hits"][0]["item"]["text"] == texts[6] and found["hits"][0]["rerank_score"] == pytest.approx(0.9)
