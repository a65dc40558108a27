"""EG-RL: reward functions on hand-made similarities, candidate shuffling, format checks, one GRPO step."""

import json
import math
import random

import pytest
import torch
from chat_server import ChatServer, choices, text_of
from egrl_helpers import tiny_eg_rl_overrides

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.core.tcot import TCoT, parse_tcot, render_tcot
from embedrl.models.chat import EndpointChat
from embedrl.train.egrl.judge import Discriminator
from embedrl.train.egrl.rewards import (
    discriminator_prompt,
    format_rewards,
    outcome_rewards,
    parse_choice,
    process_rewards,
    shuffle_candidates,
)

GOOD = '<thinking>{"text_keywords": ["red"]}</thinking><rethink>r</rethink><answer>red</answer>'


def test_outcome_reward_on_hand_made_similarities():
    sim_pos = torch.tensor([0.9, 0.5, 0.5, 0.4])
    sim_neg = torch.tensor([[0.1, 0.3, float("nan")],   # top-1: 0.9 - softmax-weighted mean of (0.1, 0.3)
                            [0.6, 0.2, 0.1],            # rank 2: 0 with k=1
                            [0.5, 0.2, float("nan")],   # tie with a negative: the positive still ranks first
                            [float("nan")] * 3])        # no negatives: the similarity itself
    w = torch.softmax(torch.tensor([0.1, 0.3]) / 0.5, 0)
    expected0 = 0.9 - (w * torch.tensor([0.1, 0.3])).sum()
    w2 = torch.softmax(torch.tensor([0.5, 0.2]) / 0.5, 0)
    expected2 = 0.5 - (w2 * torch.tensor([0.5, 0.2])).sum()
    out = outcome_rewards(sim_pos, sim_neg, k=1, tau=0.5)
    assert torch.allclose(out, torch.stack([expected0, torch.tensor(0.0), expected2, torch.tensor(0.4)]), atol=1e-6)
    # with k=2 the second row is paid too; a lower tau weights the hardest negative more
    assert outcome_rewards(sim_pos, sim_neg, k=2)[1] > 0
    assert outcome_rewards(sim_pos[:1], sim_neg[:1], tau=0.01)[0] < outcome_rewards(sim_pos[:1], sim_neg[:1], tau=10)[0]


def test_rank_outcome_pays_by_rank_alone():
    sim_pos = torch.tensor([0.9, 0.5, 0.5, 0.52, 0.4])
    sim_neg = torch.tensor([[0.1, 0.3, float("nan")],   # rank 1
                            [0.6, 0.2, 0.1],            # rank 2
                            [0.6, 0.55, 0.1],           # rank 3
                            [0.6, 0.55, 0.1],           # rank 3 too: a larger margin that changes no rank pays nothing
                            [float("nan")] * 3])        # nothing to beat: rank 1
    out = outcome_rewards(sim_pos, sim_neg, k=10, form="rank")
    expected = 1 / torch.log2(torch.tensor([2.0, 3.0, 4.0, 4.0, 2.0]))
    assert torch.allclose(out, expected)
    assert outcome_rewards(sim_pos, sim_neg, k=2, form="rank")[2] == 0  # beyond Acc_k
    with pytest.raises(ValueError, match="margin"):
        outcome_rewards(sim_pos, sim_neg, form="hit")


def test_a_failed_rollout_never_outscores_a_success_of_its_prompt():
    from embedrl.train.egrl.rewards import floor_failures, positive_rank

    # at a small tau the margin of a success ranked below a hard negative is negative ...
    sim_pos, sim_neg = torch.tensor([0.5, 0.2]), torch.tensor([[0.6, 0.1], [0.6, 0.1]])
    margins = outcome_rewards(sim_pos, sim_neg, k=10, tau=0.05)
    assert positive_rank(sim_pos, sim_neg).tolist() == [2, 2] and bool((margins < 0).all())
    # ... so a flat 0 pays the broken rollout (third) and the one outside the top k (fourth) the most;
    # floored, each earns its prompt's worst success, and a prompt with no success earns 0
    rewards, succeeded = [*margins.tolist(), 0.0, 0.0, 0.0], [True, True, False, False, False]
    floored = floor_failures(rewards, succeeded, ["p", "p", "p", "p", "other"])
    assert floored[:2] == rewards[:2] and floored[2] == floored[3] == min(rewards[:2]) and floored[4] == 0.0
    # positive margins leave failures at 0, as the flat rule does
    assert floor_failures([0.3, 0.0], [True, False], ["p", "p"]) == [0.3, 0.0]


def test_shuffle_puts_the_positive_everywhere_and_reports_it():
    rng = random.Random(0)
    positions = []
    for _ in range(400):
        candidates, gold = shuffle_candidates("POS", ["n1", "n2", "n3"], rng)
        assert candidates[gold] == "POS" and sorted(candidates) == sorted(["POS", "n1", "n2", "n3"])
        positions.append(gold)
    counts = [positions.count(i) for i in range(4)]
    assert min(counts) > 60  # roughly uniform (100 expected each): no positional shortcut


@pytest.mark.parametrize("text", [
    "", "<thinking>{\"text_keywords\": [\"a\"]}", "<thinking>{bad}</thinking><rethink>r</rethink><answer>a</answer>",
    '<thinking>{"bbox_2d": [0, 0, 1200, 10]}</thinking><rethink>r</rethink><answer>a</answer>',
])
def test_format_reward_is_zero_on_broken_outputs(text):
    assert format_rewards([parse_tcot(text)]) == [0.0]
    assert format_rewards([parse_tcot(GOOD)]) == [1.0]


def test_reward_spread_names_a_component_the_others_drown(tmp_path):
    from embedrl.train.egrl.diagnostics import (
        check_reward_balance,
        plot_reward_curves,
        reward_spread,
    )

    history = [{"step": 5, "reward": 0.3, "rewards/format/mean": 0.7, "rewards/format/std": 0.4,
                "rewards/outcome/mean": 0.01, "rewards/outcome/std": 0.01,
                "rewards/process/mean": 0.0, "rewards/process/std": 0.0},
               {"step": 10, "reward": 0.4, "rewards/format/mean": 0.9, "rewards/format/std": 0.2,
                "rewards/outcome/mean": 0.02, "rewards/outcome/std": 0.02,
                "rewards/process/mean": 0.0, "rewards/process/std": 0.0},
               {"train_runtime": 12.0}]  # the trainer's last row carries no rewards
    spread = reward_spread(history, {"format": 0.3, "process": 0.2, "outcome": 0.8})
    assert spread == pytest.approx({"format": 0.09, "process": 0.0, "outcome": 0.012})
    warnings = check_reward_balance(spread)
    assert len(warnings) == 2
    assert "process reward never varied" in warnings[0]
    assert "outcome reward's weighted spread is 0.012 against format's 0.09" in warnings[1]
    assert "raise outcome_weight (x7.5" in warnings[1]
    # at weight 8 the outcome margin steers as much as the format reward: nothing to say
    assert check_reward_balance(reward_spread(history, {"format": 0.3, "outcome": 8})) == []
    assert plot_reward_curves(history, tmp_path / "curves.png", {"format": 0.3, "outcome": 8}).stat().st_size > 0


def _history(format_means, outcome_means, entropies):
    return [{"step": 5 * (k + 1), "reward": 0.3 * f + 8 * o, "rewards/format/mean": f, "rewards/outcome/mean": o,
             "entropy": e} for k, (f, o, e) in enumerate(zip(format_means, outcome_means, entropies))]


def test_reward_drift_names_a_reward_given_up_and_a_policy_drifting_off():
    from embedrl.train.egrl.diagnostics import check_reward_drift

    weights = {"format": 0.3, "outcome": 8}
    # the collapse seen once: format climbs to 0.9, outcome falls to 0, entropy 0.40 -> 0.68
    collapsed = _history([0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.9, 0.9], [0.02, 0.02, 0.015, 0.01, 0.005, 0.002, 0.0, 0.0],
                         [0.40, 0.42, 0.45, 0.5, 0.55, 0.6, 0.65, 0.68])
    warnings = check_reward_drift(collapsed, weights)
    assert len(warnings) == 2
    assert warnings[0].startswith("the outcome reward fell from 0.02 to 0 over the run (format 0.55 to 0.9)")
    assert "entropy rose from 0.41 to 0.665" in warnings[1]
    # a healthy run: both rewards up, entropy down a little; too short a log says nothing
    healthy = _history([0.5, 0.55, 0.6, 0.65, 0.7, 0.72, 0.75, 0.75], [0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.01, 0.01],
                       [0.46, 0.45, 0.44, 0.43, 0.43, 0.42, 0.42, 0.42])
    assert check_reward_drift(healthy, weights) == []
    assert check_reward_drift(collapsed[:3], weights) == []


def test_process_reward_and_choice_parsing():
    assert parse_choice("B", 3) == 1 and parse_choice("answer: (C)", 3) == 2 and parse_choice("D", 3) is None
    assert process_rewards([1, None, 0], [1, 1, 1]) == [1.0, 0.0, 0.0]
    prompt = discriminator_prompt("Q", ["x", "y"])
    assert "(A) x" in prompt and "(B) y" in prompt


class _Judge:
    """A judge behind an OpenAI-compatible endpoint: picks the candidate in `golds` (or, with `contrary`,
    one that is not), and keeps the candidate lists it was shown."""

    def __init__(self):
        self.golds: set[str] = set()
        self.contrary = False
        self.seen: list[list[str]] = []

    def __call__(self, body):
        lines = [ln for ln in text_of(body).split("\n") if ln.startswith("(")]
        candidates = [ln[4:] for ln in lines]
        self.seen.append(candidates)
        return choices([next((ln[1] for ln, c in zip(lines, candidates) if (c in self.golds) != self.contrary), "Z")])


def test_process_reward_shows_hard_negatives_shuffled_and_pays_the_right_pick(tiny_clip_dir, synth_tiny_dir):
    from embedrl.data.pairs import read_pairs
    from embedrl.models.base import load_embedder
    from embedrl.train.egrl.rewards import ProcessReward
    from embedrl.train.egrl.rollouts import CandidateBank, RolloutDataset

    judged = _Judge()
    with ChatServer(judged) as server:
        pairs, _ = read_pairs(synth_tiny_dir / "train" / "pairs.jsonl", root=synth_tiny_dir)
        norm = lambda text: render_tcot(parse_tcot(text))  # noqa: E731
        # pairs whose hard negatives' T-CoTs differ from the positive's (the annotator sometimes
        # writes the same T-CoT for both: then no judge can tell them apart)
        pairs = [p for p in pairs if len(p.neg_tcots) == 2 and norm(p.pos_tcot) not in map(norm, p.neg_tcots)][:6]
        assert len(pairs) == 6
        dataset = RolloutDataset(pairs)
        bank = CandidateBank(load_embedder(str(tiny_clip_dir)), pairs)
        judge = Discriminator(EndpointChat(server.url, "judge"))
        reward = ProcessReward(dataset, judge, bank, n_candidates=3, seed=0)
        judged.golds = {norm(p.pos_tcot) for p in pairs[:4]} | {norm(pairs[5].qry_tcot)}
        rollouts = [p.qry_tcot for p in pairs[:4]] + ["<thinking>{broken", pairs[5].pos_tcot]
        roles = ["query"] * 5 + ["target"]
        scores = reward(rollouts, pair_index=[0, 1, 2, 3, 4, 5], role=roles)
        assert scores == [1.0, 1.0, 1.0, 1.0, 0.0, 1.0]  # a broken T-CoT is not judged
        # a query is told apart from its own hard negatives (one detail off), the gold shuffled in
        for i, shown in enumerate(judged.seen[:4]):
            assert sorted(shown) == sorted([norm(pairs[i].pos_tcot)] + [norm(t) for t in pairs[i].neg_tcots])
        gold_positions = [shown.index(norm(pairs[i].pos_tcot)) for i, shown in enumerate(judged.seen[:4])]
        assert len(set(gold_positions)) > 1
        # a target is told apart from other queries of the batch
        assert norm(pairs[5].qry_tcot) in judged.seen[4] and len(judged.seen[4]) == 3
        judged.contrary = True
        assert reward(rollouts[:4], pair_index=[0, 1, 2, 3], role=["query"] * 4) == [0.0] * 4


def test_outcome_reward_scores_against_the_other_side_and_hard_negatives(tiny_clip_dir, synth_tiny_dir):
    from embedrl.data.pairs import read_pairs
    from embedrl.models.base import load_embedder
    from embedrl.train.egrl.rewards import OutcomeReward
    from embedrl.train.egrl.rollouts import CandidateBank, RolloutDataset

    pairs, _ = read_pairs(synth_tiny_dir / "train" / "pairs.jsonl", root=synth_tiny_dir)
    pairs = [p for p in pairs if p.dataset == "Synth-I2T"][:4]
    embedder = load_embedder(str(tiny_clip_dir))
    dataset = RolloutDataset(pairs)
    bank = CandidateBank(embedder, pairs)
    reward = OutcomeReward(dataset, embedder, bank, k=10, tau=0.5)
    completions = [pairs[0].qry_tcot, pairs[0].qry_tcot, pairs[1].pos_tcot, "<thinking>junk"]
    scores = reward(completions, pair_index=[0, 0, 1, 2], role=["query", "query", "target", "query"])
    # k=10 admits every rank, so each score is sim(pos) minus the weighted negatives, computed by hand here
    q = embedder.encode([pairs[0].query], [parse_tcot(pairs[0].qry_tcot)])[0]
    pos = bank.get([("target", 0)])[0]
    negs = bank.get([("target", 1), ("target", 2)] + [("neg", 0, j) for j in range(len(pairs[0].negs))])
    sims = negs @ q
    expected = q @ pos - (torch.softmax(sims / 0.5, 0) * sims).sum()
    assert abs(scores[0] - expected.item()) < 1e-5 and scores[0] == scores[1]
    t = embedder.encode([pairs[1].pos], [parse_tcot(pairs[1].pos_tcot)])[0]
    qs = bank.get([("query", 0), ("query", 2)]) @ t  # a target rollout ranks queries: no hard negatives
    expected_t = t @ bank.get([("query", 1)])[0] - (torch.softmax(qs / 0.5, 0) * qs).sum()
    assert abs(scores[2] - expected_t.item()) < 1e-5
    # a junk rollout earns nothing (scored as the raw item, it would pay the policy for breaking the format)
    assert scores[3] == 0.0
    assert reward(["<thinking>junk"], pair_index=[0], role=["query"]) == [0.0]
    # floored (the default), a junk rollout earns the lower of 0 and its prompt's worst success; alone, 0
    batch = ([pairs[0].qry_tcot, "<thinking>junk", "<thinking>junk"], [0, 0, 2], ["query"] * 3)
    flat = OutcomeReward(dataset, embedder, bank, k=10, tau=0.05, failure="zero")(
        batch[0], pair_index=batch[1], role=batch[2])
    floored = OutcomeReward(dataset, embedder, bank, k=10, tau=0.05)(batch[0], pair_index=batch[1], role=batch[2])
    assert floored[0] == flat[0]
    assert floored[1] == min(0.0, floored[0]) and floored[2] == 0.0 and flat[1] == flat[2] == 0.0
    # `raw`: a junk rollout earns what its raw item earns, as retrieval falls back to it
    raw = OutcomeReward(dataset, embedder, bank, k=10, tau=0.05, failure="raw")(
        batch[0], pair_index=batch[1], role=batch[2])
    assert abs(raw[0] - flat[0]) < 1e-5
    for row, i in ((1, 0), (2, 2)):
        q_raw = embedder.encode([pairs[i].query], [None])[0]
        pos = bank.get([("target", i)])[0]
        other = 2 if i == 0 else 0
        sims = bank.get([("target", other)] + [("neg", i, j) for j in range(len(pairs[i].negs))]) @ q_raw
        assert abs(raw[row] - (q_raw @ pos - (torch.softmax(sims / 0.05, 0) * sims).sum()).item()) < 1e-5


def test_target_rollout_seen_from_its_query_meets_the_hard_negatives(tiny_clip_dir, synth_tiny_dir):
    from embedrl.data.pairs import read_pairs
    from embedrl.models.base import load_embedder
    from embedrl.train.egrl.rewards import OutcomeReward
    from embedrl.train.egrl.rollouts import CandidateBank, RolloutDataset

    pairs, _ = read_pairs(synth_tiny_dir / "train" / "pairs.jsonl", root=synth_tiny_dir)
    pairs = [p for p in pairs if p.dataset == "Synth-T2I"][:3]
    assert pairs[1].negs, "the fixture's T2I pairs should carry hard negatives"
    embedder = load_embedder(str(tiny_clip_dir))
    dataset, bank = RolloutDataset(pairs), CandidateBank(embedder, pairs)
    reward = OutcomeReward(dataset, embedder, bank, k=100, form="rank", target_view="query")
    score = reward([pairs[1].pos_tcot], pair_index=[1], role=["target"])[0]
    # the query ranks the rollout's target among the other targets of the batch and the pair's hard negatives
    q = bank.get([("query", 1)])[0]
    t = embedder.encode([pairs[1].pos], [parse_tcot(pairs[1].pos_tcot)])[0]
    rivals = bank.get([("target", 1)] + [("neg", 1, j) for j in range(len(pairs[1].negs))])[1:] @ q
    rank = 1 + int((rivals > t @ q).sum())
    assert abs(score - 1 / math.log2(1 + rank)) < 1e-6
    # the paper's view ranks queries instead: a target rollout never meets the near-copy targets
    paper = OutcomeReward(dataset, embedder, bank, k=100, form="rank")
    assert ("neg", 1, 0) in reward.negatives(1, "query", in_batch=[1]) and \
        all(key[0] == "query" for key in paper.negatives(1, "target", in_batch=[0, 1]))


def test_outcome_negatives_from_every_pair_leave_out_items_equal_to_the_positive(tiny_clip_dir, synth_tiny_dir):
    from embedrl.data.pairs import read_pairs
    from embedrl.models.base import load_embedder
    from embedrl.train.egrl.rewards import OutcomeReward
    from embedrl.train.egrl.rollouts import CandidateBank, RolloutDataset

    pairs, _ = read_pairs(synth_tiny_dir / "train" / "pairs.jsonl", root=synth_tiny_dir)
    pairs = [p for p in pairs if p.dataset == "Synth-CLS"]  # labels repeat across pairs
    same = [j for j, p in enumerate(pairs) if j and p.pos.text == pairs[0].pos.text]
    assert same, "the fixture should hold two images of one class"
    embedder = load_embedder(str(tiny_clip_dir))
    dataset, bank = RolloutDataset(pairs), CandidateBank(embedder, pairs)
    everyone = OutcomeReward(dataset, embedder, bank, k=10, tau=0.5, negatives="all")
    keys = everyone.negatives(0, "query", in_batch=[0, 1])
    labels = [bank.item(k).text for k in keys]
    # every other class's label, once, and the hard negatives, never the positive's label
    assert pairs[0].pos.text not in labels and len(labels) == len(set(labels))
    assert {bank.item(k).text for k in keys if k[0] == "target"} == {p.pos.text for p in pairs} - {pairs[0].pos.text}
    score = everyone([pairs[0].qry_tcot], pair_index=[0], role=["query"])[0]
    q = embedder.encode([pairs[0].query], [parse_tcot(pairs[0].qry_tcot)])[0]
    sims = bank.get(keys) @ q
    expected = q @ bank.get([("target", 0)])[0] - (torch.softmax(sims / 0.5, 0) * sims).sum()
    assert abs(score - expected.item()) < 1e-5
    # the step's batch only: a batch-mate with the same label is not a negative either
    batch = OutcomeReward(dataset, embedder, bank, negatives="batch")
    assert ("target", same[0]) not in batch.negatives(0, "query", in_batch=[0, same[0]])
    for bad in ("hardest", 0, "2.5"):
        with pytest.raises(EmbedrlError, match="outcome negatives"):
            OutcomeReward(dataset, embedder, bank, negatives=bad)


def test_outcome_negatives_drawn_once_per_pair_from_its_own_dataset(synth_tiny_dir):
    from embedrl.data.pairs import read_pairs
    from embedrl.train.egrl.config import build_egrl_config
    from embedrl.train.egrl.rewards import OutcomeReward
    from embedrl.train.egrl.rollouts import CandidateBank, RolloutDataset

    pairs, _ = read_pairs(synth_tiny_dir / "train" / "pairs.jsonl", root=synth_tiny_dir)
    dataset = RolloutDataset(pairs)
    reward = OutcomeReward(dataset, None, CandidateBank(None, pairs), negatives="4", seed=0)
    drawn = reward.others(3, in_batch=[3, 40])
    assert len(drawn) == 4 and {pairs[j].dataset for j in drawn} == {pairs[3].dataset}
    # the same pairs each time, for every pair of the dataset (each is embedded once)
    same = next(j for j in range(len(pairs)) if j != 3 and pairs[j].dataset == pairs[3].dataset)
    assert reward.others(3, in_batch=[3, 90]) == drawn == reward.others(same, in_batch=[same])
    elsewhere = next(j for j in range(len(pairs)) if pairs[j].dataset != pairs[3].dataset)
    assert set(reward.others(elsewhere, in_batch=[elsewhere])).isdisjoint(drawn)  # another dataset: its own
    # `dataset`: every pair of the rollout's own dataset, as a held-out query meets its own set's candidates
    own = OutcomeReward(dataset, None, CandidateBank(None, pairs), negatives="dataset")
    assert list(own.others(3, in_batch=[3, 40])) == [j for j, p in enumerate(pairs) if p.dataset == pairs[3].dataset]
    # a config takes a number, `all` or `batch`, and names the choices when given anything else
    common = ["reasoner=r", "embedder=e", "train_data=t"]
    assert build_egrl_config(None, [*common, "outcome_negatives=64"]).outcome_negatives == "64"
    assert build_egrl_config(None, [*common, "outcome_negatives=dataset"]).outcome_negatives == "dataset"
    with pytest.raises(EmbedrlError, match="positive number of pairs"):
        build_egrl_config(None, [*common, "outcome_negatives=some"])


def test_outcome_ranks_script_a_dataset_pool_never_ranks_a_positive_lower(tiny_clip_dir, synth_tiny_dir, capsys):
    from embedrl.lab.diagnostics import outcome_ranks

    found = outcome_ranks.main(["--embedder", str(tiny_clip_dir), "--data", str(synth_tiny_dir),
                                                 "--pools", "all", "dataset"])
    assert found["all"].keys() == found["dataset"].keys() and ("Synth-CLS", "query") in found["all"]
    # its own dataset's pairs are a part of every pair: the positive can only rank as high or higher there
    for key, ranks in found["all"].items():
        assert all(1 <= own <= everyone for own, everyone in zip(found["dataset"][key], ranks))
    assert "| dataset | Synth-CLS | query |" in capsys.readouterr().out


def test_reward_content_script_orders_rollouts_by_reward_and_by_right_keywords(tiny_reasoner_dir, tiny_clip_dir,
                                                                              synth_tiny_dir, capsys):
    from embedrl.lab.diagnostics import reward_content as script

    gold, half = TCoT(keywords=["Red circle", "blue square"]), TCoT(keywords=["red  circle", "green star"])
    assert script.keyword_match(gold, gold) == 1.0 and script.keyword_match(half, gold) == 1 / 3
    # pairs of rollouts with equal content are no evidence; a reward tie is counted apart
    assert script.concordance([0.3, 0.1, 0.1, 0.2], [1.0, 0.5, 0.0, 1.0]) == (4, 0, 1)
    assert script.concordance([0.1, 0.3], [1.0, 0.0]) == (0, 1, 0)
    found = script.main(["--embedder", str(tiny_clip_dir), "--reasoner", str(tiny_reasoner_dir), "--data",
                            str(synth_tiny_dir), "--prompts", "2", "--generations", "3", "--modalities", "image"])
    assert ("Synth-CLS", "query") in found and all(row["prompts"] == 2 for row in found.values())
    # the untrained preset writes no usable T-CoT: its rollouts earn no more than the annotated one
    assert all(row["usable"] == 0 and row["annotation_rank"] == 1 for row in found.values())
    assert "| Synth-CLS | query | 2 | 0% |" in capsys.readouterr().out
    # the FLIP reward through the same script: a frozen copy of the reasoner infers, no embedder needed
    found = script.main(["--reward", "flip", "--reasoner", str(tiny_reasoner_dir), "--data", str(synth_tiny_dir),
                         "--prompts", "1", "--generations", "2", "--modalities", "image"])
    assert all(row["usable"] == 0 and row["annotation_rank"] == 1 and row["spread"] >= 0 for row in found.values())
    assert "the flip reward does not tell" in capsys.readouterr().out


@pytest.mark.parametrize("reasoner_preset,embedder_preset", [
    ("tiny_reasoner_dir", "tiny_clip_dir"),
    # Qwen3-VL policy scored by a Qwen3-VL embedder in the embed-rl format (the paper's pairing)
    ("tiny_qwen3vl_dir", "tiny_vlm_embedder_qwen3vl_dir")])
def test_one_grpo_step_on_tiny_presets_survives_junk_generations(reasoner_preset, embedder_preset, synth_tiny_dir,
                                                                 tmp_path, request):
    from embedrl.models.reasoner import load_reasoner
    from embedrl.train.egrl.config import build_egrl_config
    from embedrl.train.egrl.trainer import train_eg_rl

    tiny_reasoner_dir, embedder_dir = (request.getfixturevalue(p) for p in (reasoner_preset, embedder_preset))
    config = build_egrl_config(None, tiny_eg_rl_overrides(tiny_reasoner_dir, embedder_dir, synth_tiny_dir, tmp_path))
    out = train_eg_rl(config)
    assert (out / "reward_curves.png").stat().st_size > 0  # with the weighted-spread panel
    reasoner = load_reasoner(out)  # the saved policy loads and generates
    assert reasoner.generate([Item(text="a red circle")], role="query", max_new_tokens=8)[0] is not None


def test_eg_rl_resumes_from_the_checkpoints_policy_weights(tiny_reasoner_dir, tiny_clip_dir, synth_tiny_dir, tmp_path):
    from embedrl.models.hf import load_vlm
    from embedrl.train.egrl.config import build_egrl_config
    from embedrl.train.egrl.trainer import train_eg_rl

    def run(steps, resume):
        return train_eg_rl(build_egrl_config(None, [
            f"reasoner={tiny_reasoner_dir}", f"embedder={tiny_clip_dir}", f"data_root={synth_tiny_dir}",
            f"train_data={synth_tiny_dir / 'train' / 'pairs.jsonl'}", f"output_dir={tmp_path}", f"max_steps={steps}",
            "save_steps=1", "per_device_train_batch_size=4", "num_generations=2", "max_completion_length=16",
            "use_cpu=true", "logging_steps=1", "max_train_pairs=8"]), resume=resume)

    run(1, False)
    # the checkpoint's policy, made unmistakable: the resumed run must go on from it, not from the start
    checkpoint = tmp_path / "checkpoint-1"
    policy, _ = load_vlm(checkpoint, what="reasoner")
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05)
    policy.save_pretrained(checkpoint)
    run(2, True)
    saved, final = (load_vlm(path, what="reasoner")[0].state_dict() for path in (checkpoint, tmp_path))
    assert max((final[k] - saved[k]).abs().max().item() for k in saved) < 0.01  # a step moves it a little


def test_bench_rl_breaks_a_step_down(tiny_reasoner_dir, tiny_clip_dir, synth_tiny_dir, tmp_path, capsys):
    from embedrl.cli import main

    out = tmp_path / "rl.json"
    assert main(["-q", "bench", "rl", "--steps", "1", "--completions", "policy", "--json", str(out),
                 f"reasoner={tiny_reasoner_dir}",
                 f"embedder={tiny_clip_dir}", f"train_data={synth_tiny_dir / 'train' / 'pairs.jsonl'}",
                 f"data_root={synth_tiny_dir}", "per_device_train_batch_size=4", "num_generations=2",
                 "max_completion_length=16", "use_cpu=true"]) == 0
    row = json.loads(out.read_text())
    assert row["steps"] == 1 and set(row["reward_by_function_s"]) == {"format", "process", "outcome"}
    parts = row["generation_s"] + row["reward_s"] + row["update_s"]
    assert abs(parts - row["total_s"]) < 1e-6 and row["generation_s"] > 0 and row["update_s"] > 0
    # the tiny policy writes no usable T-CoT in 16 tokens: nothing reaches the embedder, and the bench says so
    assert row["completions"] == "policy" and row["usable_share"] == 0.0 and row["rollouts_scored"] == 4
    assert "rewards together" in capsys.readouterr().out


def test_bench_rl_on_annotated_rollouts_reaches_the_embedder(tiny_reasoner_dir, tiny_clip_dir, synth_tiny_dir,
                                                             tmp_path, capsys):
    from embedrl.cli import main

    out = tmp_path / "rl.json"
    assert main(["-q", "bench", "rl", "--steps", "2", "--completions", "annotation", "--json", str(out),
                 f"reasoner={tiny_reasoner_dir}", f"embedder={tiny_clip_dir}",
                 f"train_data={synth_tiny_dir / 'train' / 'pairs.jsonl'}", f"data_root={synth_tiny_dir}",
                 "per_device_train_batch_size=4", "num_generations=2", "max_completion_length=112",
                 "use_cpu=true", "process_weight=0"]) == 0
    row = json.loads(out.read_text())
    assert row["usable_share"] == 1.0 and row["rollouts_scored"] == 8 and row["candidate_bank"] > 0
    assert row["generation_s"] > 0 and 0 < row["outcome_share"] < 1
    assert "of the step" in capsys.readouterr().out


def test_ablation_refuses_a_benchmark_from_an_older_generator(tmp_path):
    from embedrl.core.errors import EmbedrlError
    from embedrl.lab.ablation.config import AblationConfig
    from embedrl.lab.ablation.run import run_ablation
    from embedrl.lab.synth.benchmark import VERSION

    data = tmp_path / "synth"
    data.mkdir()
    (data / "meta.json").write_text(json.dumps({"generator": "embedrl.lab.synth.benchmark", "version": VERSION - 1,
                                                "seed": 0, "size": "small"}))
    with pytest.raises(EmbedrlError, match=f"version {VERSION - 1}.*--overwrite"):
        run_ablation(AblationConfig(out=str(tmp_path / "out"), data=str(data)))
    assert not (tmp_path / "out").exists()  # nothing was started


@pytest.mark.parametrize("name", ["ablation_tiny.yaml", "ablation_tiny_warm.yaml", "ablation_tiny_warm_digits.yaml"])
def test_shipped_ablation_configs_load_and_name_existing_recipes(name):
    from pathlib import Path

    from embedrl.core.config import build_config
    from embedrl.lab.ablation.config import AblationConfig
    from embedrl.train.egrl.config import build_egrl_config

    root = Path(__file__).resolve().parents[1]
    config = build_config(AblationConfig, root / "eval" / name, [])
    for recipe in (config.embedder_recipe, config.warmup_recipe, config.sft_recipe, config.eg_rl_recipe):
        assert recipe is None or (root / recipe).is_file()
    # the EG-RL overrides, the reasoner's modalities included, are fields EG-RL knows
    rl = build_egrl_config(str(root / config.eg_rl_recipe), [
        "reasoner=r", "embedder=e", "train_data=t", *config.modalities_override(), *config.eg_rl_overrides])
    assert rl.modalities == config.tcot_modalities
    # so is every variant's, on top of them
    from embedrl.lab.ablation.config import VARIANTS

    for _, extra in VARIANTS.values():
        build_egrl_config(str(root / config.eg_rl_recipe), ["reasoner=r", "embedder=e", "train_data=t",
                                                             *config.eg_rl_overrides, *(extra or [])])


def test_eg_rl_config_names_the_outcome_choices_when_given_others():
    from embedrl.train.egrl.config import build_egrl_config

    common = ["reasoner=r", "embedder=e", "train_data=t"]
    config = build_egrl_config(None, [*common, "outcome_form=rank", "target_view=query"])
    assert (config.outcome_form, config.target_view) == ("rank", "query")
    with pytest.raises(EmbedrlError, match="'margin', 'rank'"):
        build_egrl_config(None, [*common, "outcome_form=hit"])
    with pytest.raises(EmbedrlError, match="'target', 'query'"):
        build_egrl_config(None, [*common, "target_view=both"])
    with pytest.raises(EmbedrlError, match="'zero', 'floor', 'raw'"):
        build_egrl_config(None, [*common, "outcome_failure=min"])


def test_ablation_scores_on_a_separate_evaluation_benchmark(tmp_path, synth_tiny_dir):
    from embedrl.eval.mmeb import load_specs
    from embedrl.lab.ablation.config import AblationConfig
    from embedrl.lab.ablation.run import run_ablation

    held_out = tmp_path / "held_out"
    report = run_ablation(AblationConfig(
        out=str(tmp_path / "out"), data=str(synth_tiny_dir), variants=["raw"], seeds=[0], eval_queries=None,
        eval_data=str(held_out), eval_data_size="tiny", eval_data_seed=1,
        embedder_overrides=["max_steps=2", "per_device_train_batch_size=8"]))
    meta = json.loads((held_out / "meta.json").read_text())
    assert (meta["seed"], meta["size"]) == (1, "tiny") and report["eval_data"] == str(held_out)
    # the held-out benchmark is a different draw from the training one, and its sets are the ones scored
    assert (held_out / "scenes.jsonl").read_text() != (synth_tiny_dir / "scenes.jsonl").read_text()
    assert set(report["scores"]["raw"]["0"]) == {s.name for s in load_specs(held_out / "registry.yaml")} | {"overall"}
    # per-query hits are kept beside the scores, and agree with them
    hits = json.loads((tmp_path / "out" / "raw.hits.json").read_text())
    for name, row in hits.items():
        assert abs(100 * sum(row) / len(row) - report["scores"]["raw"]["0"][name]) < 1e-9


def test_ablation_rejects_unknown_modalities():
    from embedrl.lab.ablation.config import AblationConfig

    with pytest.raises(Exception, match="subset of"):
        AblationConfig(tcot_modalities=["picture"])
    with pytest.raises(ValueError, match="T-CoT modes must be one of"):
        AblationConfig(tcot_mode_by_set={"Synth-Grounding": "candidates"})


def _candidates(prompt: str) -> list[str]:
    return [ln[4:] for ln in prompt.split("\n") if ln.startswith("(")]


def test_discriminator_learns_from_the_process_rewards_own_questions(synth_tiny_dir):
    from embedrl.data.pairs import read_pairs
    from embedrl.lab.discriminator import discriminator_examples

    pairs, _ = read_pairs(synth_tiny_dir / "train" / "pairs.jsonl", root=synth_tiny_dir)
    norm = lambda text: render_tcot(parse_tcot(text))  # noqa: E731
    pairs = [p for p in pairs if p.neg_tcots][:6]
    examples = discriminator_examples(pairs, n_candidates=3, questions=2, seed=0)
    assert len(examples) == 6 * 2 * 2  # every pair, both roles, two questions each
    letters = []
    for n, example in enumerate(examples):
        pair, role = pairs[n // 4], ("query", "target")[n // 2 % 2]
        prompt = example["prompt"][0]["content"][0]["text"]
        asked, positive = (pair.qry_tcot, pair.pos_tcot) if role == "query" else (pair.pos_tcot, pair.qry_tcot)
        assert prompt.startswith(f"Query evidence: {norm(asked)}")
        shown = _candidates(prompt)
        letter = example["completion"][0]["content"][0]["text"]
        letters.append(letter)
        assert shown[ord(letter) - ord("A")] == norm(positive)
        # nothing shown reads like the positive: such a question could only be guessed
        assert shown.count(norm(positive)) == 1
        hard = {norm(t) for t in pair.neg_tcots} - {norm(positive)}
        if role == "query" and hard:  # a query is asked to rule out its own hard negatives
            assert hard & set(shown)
    assert len(set(letters)) > 1


def test_train_discriminator_command_saves_a_discriminator(tiny_reasoner_dir, synth_tiny_dir, tmp_path):
    from embedrl.cli import main
    from embedrl.train.egrl.judge import load_discriminator

    out = tmp_path / "disc"
    assert main(["-q", "train", "discriminator", f"model={tiny_reasoner_dir}", f"output_dir={out}",
                 f"train_data={synth_tiny_dir / 'train' / 'pairs.jsonl'}", f"data_root={synth_tiny_dir}",
                 "max_steps=2", "per_device_train_batch_size=2", "max_train_pairs=4", "use_cpu=true",
                 "report_to=none", "save_strategy=no"]) == 0
    choices = load_discriminator(str(out)).choose([discriminator_prompt("Q", ["x", "y", "z"])], [3])
    assert len(choices) == 1 and choices[0] in (0, 1, 2, None)


def test_rollouts_and_candidates_follow_the_reasoners_modalities(synth_tiny_dir):
    from embedrl.data.pairs import read_pairs
    from embedrl.models.prompts import modality_of
    from embedrl.train.egrl.rollouts import CandidateBank, RolloutDataset

    pairs, _ = read_pairs(synth_tiny_dir / "train" / "pairs.jsonl", root=synth_tiny_dir)
    visual = RolloutDataset(pairs, ["image", "video"])
    rows = visual.hf[:]
    kinds = {modality_of(visual.item(i, r)) for i, r in zip(rows["pair_index"], rows["role"])}
    assert kinds == {"image", "video"} and len(visual.hf) < len(RolloutDataset(pairs).hf)
    bank = CandidateBank(None, pairs, modalities=["image", "video"])
    i = next(n for n, p in enumerate(pairs) if modality_of(p.pos) == "text" and p.pos_tcot)
    j = next(n for n, p in enumerate(pairs) if modality_of(p.pos) == "image" and p.pos_tcot)
    assert bank.entry(("target", i))[1] is None  # scored raw, as the reasoner leaves it at evaluation
    assert bank.entry(("target", j))[1] is not None
    with pytest.raises(Exception, match="modalities"):
        RolloutDataset(pairs, ["document"])


def test_a_dataset_can_keep_its_queries_raw_in_rollouts_and_scoring(synth_tiny_dir):
    """`tcot_mode_by_set` in EG-RL matches evaluation's: a `target` dataset's queries are not rolled
    out and are scored raw; its targets, and every other dataset's sides, keep their T-CoTs."""
    from embedrl.data.pairs import read_pairs
    from embedrl.train.egrl.config import build_egrl_config
    from embedrl.train.egrl.rollouts import CandidateBank, RolloutDataset

    pairs, _ = read_pairs(synth_tiny_dir / "train" / "pairs.jsonl", root=synth_tiny_dir)
    modes = {"Synth-Grounding": "target"}
    rows = RolloutDataset(pairs, mode_by_set=modes).hf[:]
    rolled = {(pairs[i].dataset, r) for i, r in zip(rows["pair_index"], rows["role"])}
    assert ("Synth-Grounding", "target") in rolled and ("Synth-Grounding", "query") not in rolled
    assert ("Synth-VQA", "query") in rolled
    bank = CandidateBank(None, pairs, mode_by_set=modes)
    g = next(n for n, p in enumerate(pairs) if p.dataset == "Synth-Grounding" and p.qry_tcot and p.pos_tcot)
    v = next(n for n, p in enumerate(pairs) if p.dataset == "Synth-VQA" and p.qry_tcot)
    assert bank.entry(("query", g))[1] is None and bank.entry(("target", g))[1] is not None
    assert bank.entry(("query", v))[1] is not None
    with pytest.raises(Exception, match="Synth-Grounds"):  # a typo is refused, not ignored
        RolloutDataset(pairs, mode_by_set={"Synth-Grounds": "target"})
    with pytest.raises(Exception, match="left to roll out"):
        RolloutDataset(pairs, mode_by_set={d: "none" for d in {p.dataset for p in pairs}})
    with pytest.raises(Exception, match="tcot_mode_by_set"):
        build_egrl_config(None, ["reasoner=r", "embedder=e", "train_data=t", "tcot_mode_by_set={Synth-T2I: queries}"])


def test_candidates_can_carry_the_starting_reasoners_tcots_written_once(synth_tiny_dir, tiny_reasoner_dir, tmp_path):
    from embedrl.data.pairs import read_pairs
    from embedrl.models.prompts import modality_of
    from embedrl.models.reasoner import load_reasoner
    from embedrl.train.egrl.rollouts import CandidateBank

    pairs, _ = read_pairs(synth_tiny_dir / "train" / "pairs.jsonl", root=synth_tiny_dir)
    cache = tmp_path / "tcots.sqlite"
    writer = load_reasoner(str(tiny_reasoner_dir), cache=cache, max_new_tokens=16, modalities=["image"])
    bank = CandidateBank(None, pairs, "reasoner", modalities=["image"], reasoner=writer)
    i = next(n for n, p in enumerate(pairs) if modality_of(p.pos) == "image" and p.negs)
    t = next(n for n, p in enumerate(pairs) if modality_of(p.pos) == "text")
    keys = [("target", i), ("neg", i, 0), ("target", t)]
    entries = bank.entries(keys)
    assert writer.generated_items == 2  # the text target is read raw, never generated for
    assert entries[2][1] is None and entries[0][1] is not None
    assert entries[0][1] != bank.annotation("target", i)  # the reasoner's, not the pairs file's
    again = bank.entries(keys)
    assert writer.generated_items == 2 and [e[1] for e in again] == [e[1] for e in entries]
    # a fresh bank over the same cache reuses what was written (as indexing and evaluation do)
    fresh = load_reasoner(str(tiny_reasoner_dir), cache=cache, max_new_tokens=16, modalities=["image"])
    CandidateBank(None, pairs, "reasoner", modalities=["image"], reasoner=fresh).entries(keys)
    assert fresh.generated_items == 0
    with pytest.raises(Exception, match="candidate T-CoTs"):
        CandidateBank(None, pairs, "written")


def test_ablation_reports_the_share_of_usable_tcots_per_variant():
    from embedrl.lab.ablation.report import format_usage
    from embedrl.lab.ablation.stats import summarize_usage

    def run(usable_query):  # two sets; targets all usable
        return {"A": {"query": {"written": 10, "usable": usable_query}, "target": {"written": 5, "usable": 5}},
                "B": {"query": {"written": 10, "usable": 10}}}

    usable = summarize_usage({"raw": {}, "sft": {0: run(0), 1: run(10)}, "eg_rl": {0: run(10)}})
    assert "raw" not in usable
    assert usable["sft"]["query"] == {"mean": 75.0, "std": 25.0}  # 50% and 100% of 20
    assert usable["sft"]["target"] == {"mean": 100.0, "std": 0.0}
    table = format_usage(usable)
    assert "| (b) T-CoT, SFT reasoner | 75.0 ± 25.0 | 100.0 ± 0.0 |" in table
    assert format_usage({}) == ""


def test_ablation_says_whether_each_step_clears_the_seeds_spread():
    from embedrl.lab.ablation.report import format_ordering
    from embedrl.lab.ablation.stats import paper_ordering, summarize

    def seeds(*overall):
        return {s: {"A": v, "overall": v} for s, v in enumerate(overall)}

    # the warm config's seeds 0-2: EG-RL − SFT +1.177 against an SFT spread of 1.174
    summary = summarize({"raw": seeds(19.8, 19.8, 19.8), "sft": seeds(23.14, 25.79, 23.50),
                         "eg_rl": seeds(25.04, 25.21, 25.71)})
    ordering = paper_ordering(summary)
    assert ordering["sft - raw"]["above_spread"] and ordering["eg_rl - sft"]["above_spread"]
    assert ordering["eg_rl - sft"]["spread"] == summary["sft"]["overall"]["std"]  # the larger of the two rows
    assert ": met (" in format_ordering(ordering)
    # one EG-RL seed a point lower: the step (+0.84) falls inside the SFT spread
    worse = paper_ordering(summarize({"raw": seeds(19.8, 19.8, 19.8), "sft": seeds(23.14, 25.79, 23.50),
                                      "eg_rl": seeds(24.04, 25.21, 25.71)}))
    assert worse["sft - raw"]["above_spread"] and not worse["eg_rl - sft"]["above_spread"]
    assert "not met" in format_ordering(worse) and "(c) − (b) +0.84, not above" in format_ordering(worse)
    # a table without EG-RL cannot meet the claim, and says so
    assert "not met" in format_ordering(paper_ordering({k: summary[k] for k in ("raw", "sft")}))
    assert format_ordering({}) == ""
    # seed by seed: a step inside the spread can still hold on most seeds (fresh seeds 6-8)
    scores = {"raw": seeds(19.8, 19.8, 19.8), "sft": seeds(25.64, 21.68, 25.46), "eg_rl": seeds(26.79, 24.00, 24.00)}
    fresh = paper_ordering(summarize(scores), scores)
    assert not fresh["eg_rl - sft"]["above_spread"]
    assert (fresh["eg_rl - sft"]["seeds_above"], fresh["eg_rl - sft"]["seeds"]) == (2, 3)
    assert fresh["sft - raw"]["seeds_above"] == 3
    assert "above on 2 of 3 seeds" in format_ordering(fresh)


def test_paired_interval_of_a_step_over_the_same_queries():
    from embedrl.lab.ablation.stats import paired_interval

    same = [{"A": [1, 0, 1, 0], "B": [0, 1]}] * 2
    assert paired_interval(same, same) == {"diff": 0.0, "low": 0.0, "high": 0.0}
    zeros = [{"A": [0] * 50, "B": [0] * 50}] * 3
    ones = [{"A": [1] * 50, "B": [1] * 50}] * 3
    assert paired_interval(zeros, ones) == {"diff": 100.0, "low": 100.0, "high": 100.0}
    # half the queries of set A flip to right: +25 overall (A +50, B 0), an interval around it, above 0
    half = [{"A": [1] * 25 + [0] * 25, "B": [0] * 50}] * 3
    step = paired_interval(zeros, half)
    assert step["diff"] == 25.0 and 0 < step["low"] < 25 < step["high"] < 50


def test_ablation_does_not_rerun_a_variant_whose_switched_off_reward_never_varied(tmp_path):
    from embedrl.core.io import write_json
    from embedrl.lab.ablation.config import VARIANTS
    from embedrl.lab.ablation.report import format_reused
    from embedrl.lab.ablation.run import reward_never_varied

    run = tmp_path / "eg_rl"
    rows = [{"step": 5, "reward": 0.2, "rewards/format/mean": 0.5, "rewards/format/std": 0.5,
             "rewards/process/mean": 0.0, "rewards/process/std": 0.0,
             "rewards/outcome/mean": 0.01, "rewards/outcome/std": 0.02}] * 4 + [{"train_runtime": 9.0}]
    write_json(run / "log_history.json", rows)
    no_process, no_outcome = VARIANTS["no_process"][1], VARIANTS["no_outcome"][1]
    assert reward_never_varied(run, no_process) is None  # the run is not complete yet
    write_json(run / "embedrl_reasoner.json", {})
    assert reward_never_varied(run, no_process) == "process"
    assert reward_never_varied(run, no_outcome) is None  # the outcome reward did vary: (e) is a run of its own
    assert reward_never_varied(run, VARIANTS["paper_text"][1]) is None  # reweighting is not switching off
    # one rollout the discriminator got right makes (d) a different run
    write_json(run / "log_history.json", [*rows[:3], {**rows[0], "rewards/process/mean": 0.01,
                                                        "rewards/process/std": 0.1}])
    assert reward_never_varied(run, no_process) is None
    assert "(d) is (c)'s run on seed(s) 0, 2" in format_reused({"no_process": [0, 2]})
    assert format_reused({}) == ""


def test_ablation_runs_seeds_in_parallel_workers_and_tabulates_them_all(tmp_path, synth_tiny_dir):
    from embedrl.lab.ablation.config import AblationConfig
    from embedrl.lab.ablation.run import run_ablation

    out = tmp_path / "out"
    config = AblationConfig(
        out=str(out), data=str(synth_tiny_dir), variants=["raw", "sft"], seeds=[0, 1], workers=2, eval_queries=4,
        datasets=["Synth-CLS"], embedder_overrides=["max_steps=1", "per_device_train_batch_size=4"],
        sft_overrides=["max_steps=1", "per_device_train_batch_size=2"], max_new_tokens=8)
    report = run_ablation(config)
    # each seed trained and scored in its own process, logging beside its stages
    for seed in (0, 1):
        assert (out / f"seed{seed}" / "sft" / "embedrl_reasoner.json").is_file()
        assert "reasoner SFT" in (out / f"seed{seed}" / "ablation.log").read_text()
    assert set(report["scores"]["sft"]) == {"0", "1"} and set(report["scores"]["raw"]) == {"0", "1"}
    assert "(b) T-CoT, SFT reasoner" in (out / "ablation.md").read_text()
    # every process's stage times land in the one timings file
    assert {"embedder", "seed 0: reasoner SFT", "seed 1: reasoner SFT"} <= set(report["timings_s"])
    # a second run finds every stage done and reads the same results
    assert run_ablation(config)["scores"] == report["scores"]


def test_ablation_workers_must_be_positive():
    from embedrl.lab.ablation.config import AblationConfig

    with pytest.raises(ValueError, match="workers must be at least 1"):
        AblationConfig(workers=0)


def test_a_stopped_ablation_stops_its_seed_workers_and_resumes(tmp_path, synth_tiny_dir):
    """`kill` (SIGTERM) on the ablation ends its seed workers too, so a rerun does not race orphans
    over the same files; the rerun finishes the table from the stages already done."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs /proc to find the workers")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "embedrl", "-q", "eval", "ablation", f"out={out}", f"data={synth_tiny_dir}",
            "variants=[raw, sft]", "seeds=[0, 1]", "workers=2", "eval_queries=4", "datasets=[Synth-CLS]",
            "embedder_overrides=[max_steps=1, per_device_train_batch_size=4]",
            "sft_overrides=[max_steps=30, per_device_train_batch_size=2]", "max_new_tokens=8"]
    parent = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def workers() -> list[int]:
        path = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.is_file() else []

    deadline = time.monotonic() + 300
    while len(workers()) < 2:  # the shared stages first, then one worker per seed
        assert parent.poll() is None and time.monotonic() < deadline, "the seed workers never started"
        time.sleep(0.2)
    started = workers()
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) != 0
    for pid in started:  # stopped with their parent, not left running
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not (out / "ablation.json").exists()
    rerun = subprocess.run(args, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert set(json.loads((out / "ablation.json").read_text())["scores"]["sft"]) == {"0", "1"}


@pytest.mark.slow  # ~2 min: three EG-RL runs in fresh processes
def test_sigkill_during_eg_rl_then_resume_matches_an_uninterrupted_run(tiny_reasoner_dir, tiny_clip_dir,
                                                                         synth_tiny_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from faults import kill_when
    from safetensors.torch import load_file

    def command(out):
        return [sys.executable, "-m", "embedrl", "train", "eg-rl", f"reasoner={tiny_reasoner_dir}",
                f"embedder={tiny_clip_dir}", f"data_root={synth_tiny_dir}",
                f"train_data={synth_tiny_dir / 'train' / 'pairs.jsonl'}", f"output_dir={out}", "max_steps=4",
                "save_steps=1", "save_total_limit=10", "per_device_train_batch_size=4", "num_generations=2",
                "max_completion_length=16", "use_cpu=true", "logging_steps=1", "max_train_pairs=8"]

    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run(command(tmp_path / "reference"), check=True, capture_output=True, env=env, timeout=600)
    out = tmp_path / "killed"
    assert kill_when(command(out), out / "checkpoint-2" / "trainer_state.json", env=env, timeout=600) == -9
    assert not (out / "embedrl_reasoner.json").exists()
    resumed = subprocess.run([*command(out), "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    final, reference = (load_file(str(path / "model.safetensors")) for path in (out, tmp_path / "reference"))
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final)
