"""EG-RL's process reward in FLIP form: token F1 with SQuAD normalisation, reading a backward model's
reply, the reward over an endpoint whose inferences the test states, its config, one GRPO step."""

from __future__ import annotations

import json
import re

import pytest
from chat_server import ChatServer, choices, text_of
from egrl_helpers import tiny_eg_rl_overrides

from embedrl.core.text import normalize_answer, token_f1
from embedrl.train.egrl.flip import flip_prompt, parse_inferred
from embedrl.train.egrl.rewards import flip_rewards

GOOD = '<thinking>{"text_keywords": ["red", "circle"]}</thinking><rethink>A red circle.</rethink><answer>red circle</answer>'


def test_token_f1_on_hand_made_texts():
    # normalising: lower case, ASCII punctuation gone, a/an/the dropped, whitespace collapsed
    assert normalize_answer("The  RED circle!\tAn (old) one.") == "red circle old one"
    assert normalize_answer("a-b, c's") == "ab cs"  # punctuation inside words goes too (SQuAD's rule)
    assert normalize_answer("“quoted” — text") == "“quoted” — text"  # non-ASCII punctuation stays
    assert normalize_answer("theatre anthem") == "theatre anthem"  # articles only as whole words
    assert token_f1("The red circle.", "red circle") == 1.0
    assert token_f1("red circle on the left", "a big red circle") == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    assert token_f1("red red blue", "red blue blue") == pytest.approx(2 / 3)  # tokens count with multiplicity
    assert token_f1("blue square", "red circle") == 0.0
    assert token_f1("", "") == 0.0 and token_f1("the", "the") == 0.0  # nothing left to share: 0
    assert flip_rewards(["red circle", "x"], ["Red circle!", "y"]) == [1.0, 0.0]


def test_the_inferred_text_is_read_from_json_or_from_plain_text():
    assert parse_inferred('{"REASONING": "...", "INFERRED INSTRUCTION": "Find the red circle."}') == "Find the red circle."
    assert parse_inferred('```json\n{"Inferred_Instruction": " a caption "}\n```') == "a caption"
    assert parse_inferred('{"REASONING": "no key"}') == '{"REASONING": "no key"}'
    # a model that answers in T-CoTs (the tiny reasoner) is read as its text, tags gone
    assert normalize_answer(parse_inferred(GOOD)) == "textkeywords red circle red circle red circle"
    prompt = flip_prompt(GOOD, "target")
    assert GOOD in prompt and "search query" in prompt and "INFERRED INSTRUCTION" in prompt
    assert "the item that answers this query" in flip_prompt(GOOD, "query")
    assert "the search query it was extracted from" in flip_prompt(GOOD, "query", "own")


def backward_model(guesses: dict[str, str]):
    """Infers, for the evidence it is shown, the text `guesses` gives for it (JSON, FLIP's format)."""
    def reply(body):
        evidence = re.search(r"\[Evidence\]\n(.*)\n\n\[Your inferred text\]", text_of(body), re.S).group(1)
        return choices([json.dumps({"REASONING": "r", "INFERRED INSTRUCTION": guesses.get(evidence, "nothing")})])
    return reply


def test_flip_reward_pays_the_f1_of_the_other_side_inferred_from_the_tcot(synth_tiny_dir):
    from embedrl.data.pairs import read_pairs
    from embedrl.models.chat import EndpointChat
    from embedrl.train.egrl.flip import FlipReward
    from embedrl.train.egrl.rollouts import RolloutDataset

    pairs, _ = read_pairs(synth_tiny_dir / "train" / "pairs.jsonl", root=synth_tiny_dir)
    pairs = [p for p in pairs if p.dataset == "Synth-I2T"][:2]  # image queries, caption targets
    dataset = RolloutDataset(pairs)
    caption, query_text = pairs[0].pos.text, pairs[1].query.text
    half = " ".join(caption.split()[: len(caption.split()) // 2])
    tcot_a, tcot_b = GOOD, GOOD.replace("red", "blue")
    guesses = {tcot_a: caption, tcot_b: half}
    with ChatServer(backward_model(guesses)) as server:
        reward = FlipReward(dataset, EndpointChat(server.url, "m"))
        scores = reward([tcot_a, tcot_b, "<thinking>{broken", tcot_a], pair_index=[0, 0, 0, 1],
                        role=["query", "query", "query", "target"])
        # a query's T-CoT is paid for letting the model infer its target (the caption): all, half, nothing;
        # a broken T-CoT is not asked about; a target's T-CoT would have to give back its query
        assert scores[0] == 1.0 and 0.5 < scores[1] < 1.0 and scores[2] == 0.0
        assert scores[3] == pytest.approx(token_f1(caption, query_text))
        assert len(server.requests) == 3 and all(r["temperature"] == 0 for r in server.requests)
        assert "Infer the text of the item that answers this query" in text_of(server.requests[0])
        # `own`: the item's own text is the reference (the query's instruction, for an image query)
        own = FlipReward(dataset, EndpointChat(server.url, "m"), reference="own")
        guesses[tcot_a] = pairs[0].query.text
        assert own([tcot_a], pair_index=[0], role=["query"]) == [1.0]


def test_process_reward_forms_in_the_config():
    from embedrl.core.errors import EmbedrlError
    from embedrl.train.egrl.config import build_egrl_config

    common = ["reasoner=r", "embedder=e", "train_data=t", "use_cpu=true"]
    assert [n for n, _ in build_egrl_config(None, common).active_weights()] == ["format", "process", "outcome"]
    assert [n for n, _ in build_egrl_config(None, [*common, "process_reward=none"]).active_weights()] == [
        "format", "outcome"]
    assert build_egrl_config(None, [*common, "process_reward=flip"]).flip_model == "frozen"
    with pytest.raises(EmbedrlError, match=r"process_reward must be one of \[.judge., .flip., .none.\]"):
        build_egrl_config(None, [*common, "process_reward=rubric"])
    with pytest.raises(EmbedrlError, match="flip_reference"):
        build_egrl_config(None, [*common, "flip_reference=both"])


def test_one_grpo_step_with_the_policy_inferring_its_own_flip_reward(tiny_reasoner_dir, tiny_clip_dir, synth_tiny_dir,
                                                                     tmp_path):
    from embedrl.train.egrl.config import build_egrl_config
    from embedrl.train.egrl.trainer import build_egrl_trainer

    config = build_egrl_config(None, [*tiny_eg_rl_overrides(tiny_reasoner_dir, tiny_clip_dir, synth_tiny_dir, tmp_path),
                                      "process_reward=flip", "flip_model=policy", "flip_max_new_tokens=8",
                                      "save_strategy=no"])
    trainer = build_egrl_trainer(config)
    flip = next(r for r in trainer.reward_funcs if r.__name__ == "process")
    assert flip.backward.reasoner.model is trainer.model  # the policy infers, with the weights being trained
    trainer.train()
    logged = [row for row in trainer.state.log_history if "rewards/process/mean" in row]
    assert logged and 0.0 <= logged[0]["rewards/process/mean"] <= 1.0
