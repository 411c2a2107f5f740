"""MIXER model: shapes, each training algorithm's defining property, the schedule, the
baseline's isolation from the RNN, rewards, the parallel-text path and the CLI."""
import json

import pytest
import torch

from fastpapers.cli import main as cli
from fastpapers.data import AmbiguousTransduction, ParallelText
from fastpapers.metrics import best_reference_bleu
from fastpapers.models import mixer as M
from fastpapers.recipes import mixer as R


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(encoder="attentive", **kw):
    # init_std 0.5 (not the paper's 0.05) so that an untrained model's inputs visibly matter.
    torch.manual_seed(0)
    return M.MixerModel(M.MixerConfig(src_vocab=16, tgt_vocab=16, emb=8, hidden=12, max_tgt_len=9, encoder=encoder,
                                      init_std=0.5, **kw))


def _batch(n=6, seed=0):
    data = AmbiguousTransduction(n, seed=seed)
    return R.collate_pairs([data[i] for i in range(n)])


def test_config_validation():
    with pytest.raises(ValueError, match="encoder"):
        M.MixerConfig(src_vocab=5, tgt_vocab=5, encoder="cnn")
    with pytest.raises(ValueError, match="hidden"):
        M.MixerConfig(src_vocab=5, tgt_vocab=5, hidden=0)
    with pytest.raises(ValueError, match="window"):
        M.MixerConfig(src_vocab=5, tgt_vocab=5, window=4)


@pytest.mark.parametrize("encoder", ["attentive", "birnn"])
def test_shapes_and_decoding(encoder):
    model = _model(encoder)
    b = _batch()
    state = model.encode(b["source"])
    assert state["keys"].shape[:2] == b["source"].shape and state["mask"].dtype == torch.bool
    logits, state = model.step(torch.full((6,), 1), state)
    assert logits.shape == (6, 16) and state["h"].shape == (6, 12)
    greedy = model.translate(b["source"])
    beam = model.translate(b["source"], beam_size=4)
    assert len(greedy) == len(beam) == 6
    assert all(len(h) <= 9 and all(t not in (0, 2) for t in h) for h in greedy + beam)


def test_attention_ignores_padding():
    model = _model()
    b = _batch()
    src = b["source"]
    longer = torch.cat([src, torch.zeros(6, 3, dtype=torch.long)], 1)  # extra padding columns
    l1, _ = model.step(torch.full((6,), 1), model.encode(src))
    l2, _ = model.step(torch.full((6,), 1), model.encode(longer))
    torch.testing.assert_close(l1, l2)


def test_mixer_schedule():
    s = [M.mixer_schedule(e, xent_epochs=3, T=10, delta=3, epochs_per_stage=2) for e in range(12)]
    assert s == [10, 10, 10, 7, 7, 4, 4, 1, 1, 0, 0, 0]
    assert M.dad_probability(0, 100) == 0.0 and M.dad_probability(50, 100, 0.4) == pytest.approx(0.2)
    assert M.dad_probability(500, 100, 0.4) == pytest.approx(0.4)


def test_dad_with_zero_probability_is_xent():
    model = _model()
    b = _batch()
    x, _ = M.sequence_loss(model, b["source"], b["target"], algo="xent")
    d, _ = M.sequence_loss(model, b["source"], b["target"], algo="dad", dad_p=0.0)
    d1, _ = M.sequence_loss(model, b["source"], b["target"], algo="dad", dad_p=1.0,
                            generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, d)
    assert not torch.allclose(x, d1)


def test_e2e_feeds_differentiable_topk_mixture():
    model = _model()
    b = _batch()
    # With k = 1 the mixture is the argmax embedding: E2E's loss then equals feeding the
    # greedy token back, so compare with a hand-rolled greedy-feedback loss.
    e1, _ = M.sequence_loss(model, b["source"], b["target"], algo="e2e", e2e_k=1)
    state = model.encode(b["source"])
    x = model.tgt_emb(torch.full((6,), 1))
    ce = []
    for t in range(b["target"].shape[1]):
        logits, state = model.step_embedded(x, state)
        ce.append(torch.nn.functional.cross_entropy(logits, b["target"][:, t], ignore_index=0, reduction="none"))
        x = model.tgt_emb(logits.argmax(1))
    want = torch.stack(ce, 1).sum() / (b["target"] != 0).sum()
    torch.testing.assert_close(e1, want)
    # With k > 1 the gradient reaches the output layer through the fed-back weights too.
    model.zero_grad()
    ek, _ = M.sequence_loss(model, b["source"], b["target"], algo="e2e", e2e_k=5)
    ek.backward()
    g_e2e = model.out.weight.grad.clone()
    model.zero_grad()
    M.sequence_loss(model, b["source"], b["target"], algo="e2e", e2e_k=1)[0].backward()
    assert not torch.allclose(g_e2e, model.out.weight.grad)


def test_baseline_gets_no_gradient_into_the_rnn():
    model = _model()
    h = torch.randn(4, 12, requires_grad=True)
    model.baseline(h, 3).sum().backward()
    assert h.grad is None
    assert model.base_w.grad[3].abs().sum() > 0 and model.base_w.grad[[0, 1, 2, 4]].abs().sum() == 0
    # In the full REINFORCE loss, the baselines' squared error (the difference of two losses on
    # the same samples, with and without it) moves the baselines and nothing else.
    b = _batch()
    model.zero_grad()

    def loss(weight):
        return M.sequence_loss(model, b["source"], b["target"], algo="reinforce",
                               reward_fn=lambda hyp, refs: torch.full((hyp.shape[0],), 0.7), baseline_weight=weight,
                               generator=torch.Generator().manual_seed(1))[0]

    names, params = zip(*model.named_parameters())
    with_base, without = loss(1.0), loss(0.0)
    assert with_base.item() > without.item()
    g1 = torch.autograd.grad(with_base, params, allow_unused=True)
    g0 = torch.autograd.grad(without, params, allow_unused=True)
    for name, a, b0 in zip(names, g1, g0):
        if name.startswith("base_"):
            assert a is not None and a.abs().sum() > 0, name
        else:
            assert torch.equal(a, b0), name


def test_reinforce_policy_gradient_direction():
    # A reward that pays for token 5 raises p(5) after a few REINFORCE steps.
    model = _model()
    b = _batch(16)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)

    def reward(hyp, refs):
        return (hyp == 5).float().mean(1)

    def p5():
        with torch.no_grad():
            logits, _ = model.step(torch.full((16,), 1), model.encode(b["source"]))
            return torch.softmax(logits, -1)[:, 5].mean().item()

    before = p5()
    g = torch.Generator().manual_seed(0)
    for _ in range(15):
        loss, _ = M.sequence_loss(model, b["source"], b["target"], algo="reinforce", reward_fn=reward, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert p5() > before + 0.1


def test_mixer_prefix_is_teacher_forced_and_hypotheses_keep_it():
    model = _model()
    b = _batch()
    seen = {}

    def reward(hyp, refs):
        seen["hyp"] = hyp
        return torch.zeros(hyp.shape[0])

    M.sequence_loss(model, b["source"], b["target"], algo="mixer", xent_steps=3, reward_fn=reward, refs=None)
    assert torch.equal(seen["hyp"][:, :3], b["target"][:, :3])
    # After an EOS everything is padding.
    h = seen["hyp"]
    after = torch.cumsum((h == 2).long(), 1) > 0
    assert (h[after] == 0).all()
    # s >= T is the XENT phase of the schedule.
    full, _ = M.sequence_loss(model, b["source"], b["target"], algo="mixer", xent_steps=99, reward_fn=reward)
    x, _ = M.sequence_loss(model, b["source"], b["target"], algo="xent")
    torch.testing.assert_close(full, x)


def test_rewards():
    b = _batch()
    refs = b["references"]
    hyp = refs[:, 1]
    got = M.bleu_reward()(hyp, refs)
    torch.testing.assert_close(got, best_reference_bleu(hyp, refs, pad_id=0, eos_id=2))
    assert torch.allclose(got, torch.ones(6))
    assert torch.allclose(M.rouge_reward()(hyp, refs), torch.ones(6))
    with pytest.raises(ValueError, match="reward_fn"):
        M.sequence_loss(_model(), b["source"], b["target"], algo="mixer", xent_steps=1)
    with pytest.raises(ValueError, match="algo"):
        M.sequence_loss(_model(), b["source"], b["target"], algo="ppo")


def test_parallel_text_training_and_evaluation(tmp_path):
    src = tmp_path / "train.de"
    tgt = tmp_path / "train.en"
    src.write_text("ein haus\nein kleines haus\nder hund\n" * 4)
    tgt.write_text("a house\na small house\nthe dog\n" * 4)
    data = ParallelText(str(src), str(tgt))
    batch = R.collate_pairs([data[i] for i in range(3)])
    assert batch["references"].shape == (3, 1, batch["target"].shape[1])
    assert (batch["target"][:, 0] != 1).all()  # <bos> removed
    model = M.MixerModel(M.MixerConfig(src_vocab=len(data.source_vocab), tgt_vocab=len(data.target_vocab), emb=8,
                                       hidden=12, max_tgt_len=5))
    R.fit(model, data, algo="mixer", steps=4, batch_size=4, out_dir=str(tmp_path / "run"), xent_steps=2,
            stage_steps=1, progress=False, log_every=2)
    scores = R.evaluate(model, data, beam_size=3)
    assert set(scores) == {"bleu4", "sentence_bleu4", "exact_match"}
    path = R.save_model(model, str(tmp_path / "m.pt"), source_vocab=data.source_vocab,
                        target_vocab=data.target_vocab)
    again, sv, tv = R.load_model(path)
    assert sv.itos == data.source_vocab.itos and tv.itos == data.target_vocab.itos
    assert again.translate(batch["source"]) == model.eval().translate(batch["source"])


def test_cli_train_eval_translate(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["mixer", "train", "--algo", "mixer", "--steps", "4", "--size", "64", "--batch-size", "8",
                "--hidden", "12", "--emb", "8", "--xent-steps", "2", "--rl-lr", "1e-4", "--out", str(out)]) == 0
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["lr/model"] == pytest.approx(1e-4)  # switched at the first REINFORCE stage
    model_path = out / "model.pt"
    assert model_path.is_file() and (out / "metrics.jsonl").is_file()
    assert cli(["mixer", "eval", "--checkpoint", str(model_path), "--size", "20", "--beam", "3",
                "--out", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert set(scores) == {"greedy", "beam3"}
    src = tmp_path / "in.txt"
    src.write_text("s3 s1 s7 s2\n\ns0 s11 s4\n")
    assert cli(["mixer", "translate", "--checkpoint", str(model_path), "--input", str(src), "--beam", "2",
                "--out", str(tmp_path / "out.txt")]) == 0
    lines = (tmp_path / "out.txt").read_text().split("\n")
    assert len(lines) == 4 and lines[1] == "" and all(w.startswith("s") for w in lines[0].split())
    capsys.readouterr()
    assert cli(["mixer", "train", "--steps", "0", "--out", str(tmp_path / "x")]) == 2
    assert cli(["mixer", "eval", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert cli(["mixer", "train", "--data", "only_one_file", "--out", str(tmp_path / "y")]) == 2
    assert cli(["mixer", "train", "--rl-lr", "0", "--out", str(tmp_path / "z")]) == 2
    assert "error" in capsys.readouterr().err
