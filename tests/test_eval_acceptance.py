"""`voicestream eval acceptance`: drafts measured side by side on one fixed prompt set."""
import json

import pytest
import torch

from voicestream.acceptance import DEFAULT_PROMPTS
from voicestream.cli import main as cli_main
from voicestream.models import random_llama, truncated_copy


@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory):
    d = tmp_path_factory.mktemp("acc")
    target = random_llama(vocab_size=64, hidden_size=64, num_layers=3, num_heads=4, seed=7)
    with torch.no_grad():
        target.lm_head.weight.mul_(10)  # peaked: greedy choices a truncated copy often shares
    target.save_pretrained(d / "target")
    target.save_pretrained(d / "same")  # the target as its own draft accepts everything
    truncated_copy(target, 1).save_pretrained(d / "shallow")
    (d / "prompts.txt").write_text("\n".join(" ".join(str((7 * i + j) % 64) for j in range(6)) for i in range(6)))
    return d


def test_drafts_are_compared_on_the_same_prompts(lm_dirs, capsys):
    d = lm_dirs
    assert cli_main(["eval", "acceptance", "--target", str(d / "target"), "--draft", str(d / "same"),
                     str(d / "shallow"), "self:2", "--prompts", str(d / "prompts.txt"), "--max-new-tokens", "20",
                     "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert "acceptance" in out.err and "18/18" in out.err  # progress on stderr, over drafts x prompts
    rows = {r["draft"]: r for r in report["drafts"]}
    same, shallow = rows[str(d / "same")], rows[str(d / "shallow")]
    assert all(r["prompts"] == 6 and r["new_tokens"] == 6 * 20 for r in rows.values())
    # an exact draft: every drafted token accepted; after the prompt's forward (one token),
    # every verification yields gamma + 1 = 5 tokens: 1 + ceil(19 / 5) forwards per prompt
    assert same["target_forwards"] == 6 * 5 and same["mean_accepted_per_target_forward"] == pytest.approx(4.0)
    assert {int(k): v for k, v in same["accepted_by_depth"].items()} == {k: 1.0 for k in range(1, 5)}
    assert same["standard_error"] == 0.0
    assert 1.0 <= shallow["mean_accepted_per_target_forward"] < 5.0
    assert shallow["standard_error"] > 0.0


def test_the_table_names_each_draft_and_its_error(lm_dirs, capsys):
    d = lm_dirs
    assert cli_main(["eval", "acceptance", "--target", str(d / "target"), "--draft", str(d / "shallow"),
                     "--prompts", str(d / "prompts.txt"), "--n", "3", "--max-new-tokens", "12", "--gamma", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 prompts" in out and "gamma 2" in out and "shallow" in out and "+/- SE" in out
    assert " d1" in out and " d2" in out and " d3" not in out


def test_a_plain_lm_needs_prompts_and_a_draft(lm_dirs, capsys):
    d = lm_dirs
    assert cli_main(["eval", "acceptance", "--target", str(d / "target"), "--draft", str(d / "shallow")]) == 2
    assert "--prompts is needed" in capsys.readouterr().err
    assert cli_main(["eval", "acceptance", "--target", str(d / "target")]) == 2
    assert "--draft is needed" in capsys.readouterr().err


def test_shipped_prompts_are_held_out_from_every_distillation_prompt_set():
    from voicestream.voice.sentences import sentences

    shipped = DEFAULT_PROMPTS.read_text().splitlines()
    assert len(shipped) == len(set(shipped)) == 100
    used = set(sentences(3000, seed=10_000)) | set(sentences(1000, seed=20_000))  # distill's default + session 16's
    assert not used & set(shipped)
    # session 20's 240 prompts were drawn from seed 40000 with the shipped set filtered out
    # (the seed's stream holds one shipped sentence): this is how, for the README's command
    drawn = [t for t in dict.fromkeys(sentences(400, seed=40_000)) if t not in set(shipped) | used][:240]
    assert len(drawn) == 240 and not set(drawn) & set(shipped)


def test_the_shipped_draft_still_suits_the_shipped_target(capsys):
    """The built-in pair, on its own held-out prompts: a target retrained without re-distilling
    its draft falls far below what the shipped draft was distilled to (2.6 on all 100)."""
    assert cli_main(["eval", "acceptance", "--n", "4", "--max-new-tokens", "160", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["drafts"][0]
    assert row["prompts"] == 4 and row["mean_accepted_per_target_forward"] > 2.2
