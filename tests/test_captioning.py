"""End-to-end captioning: corpora (shapes world, COCO JSON), training through the shared
Trainer, beam decoding through the shared engine, evaluation, and the CLI."""
import json
import os

import pytest
import torch

from fastpapers.cli import main
from fastpapers.data import shapes_vocabulary
from fastpapers.recipes import semantic_attention as C
from tests.utils import assert_raises_naming


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus():
    return C.shapes_corpus(24, size=16, split="train", seed=3)


def small_model(vocab, corpus, **kw):
    torch.manual_seed(0)
    opts = dict(num_attributes=12, top_k=3, dim=16, feature_dim=16, cnn_channels=(4, 8))
    opts.update(kw)
    return C.make_model(vocab, corpus, **opts)


def test_shapes_corpus_and_pairs(corpus):
    assert corpus.images.shape == (24, 3, 16, 16) and corpus.images.dtype == torch.uint8
    assert all(len(refs) == 1 and refs[0].startswith("a ") for refs in corpus.captions)
    test = C.shapes_corpus(24, size=16, split="test", seed=3)
    assert not torch.equal(test.images, corpus.images)
    vocab = shapes_vocabulary()
    model = small_model(vocab, corpus)
    pairs = C.CaptionPairs(corpus, vocab, model.config.attribute_ids)
    image, ids, target = pairs[5]
    assert image.dtype == torch.float32 and float(image.max()) <= 1
    assert ids[0] == vocab.bos_id and vocab.decode(ids) == corpus.captions[5][0]
    words = set(corpus.captions[5][0].split())
    expected = [float(vocab.itos[i] in words) for i in model.config.attribute_ids]
    assert target.tolist() == expected


def test_attribute_vocabulary_is_frequent_content_words(corpus):
    vocab = shapes_vocabulary()
    model = small_model(vocab, corpus, num_attributes=30)
    words = {vocab.itos[i] for i in model.config.attribute_ids}
    assert {"a", "the", "and", "of"}.isdisjoint(words)
    assert {"small", "large"} <= words


def test_coco_json_corpus_and_split(tmp_path):
    from PIL import Image
    images, anns = [], []
    for i in range(5):
        Image.new("RGB", (20 + i, 18), (40 * i, 100, 200)).save(tmp_path / f"im{i}.png")
        images.append({"id": 10 + i, "file_name": f"im{i}.png"})
        anns += [{"image_id": 10 + i, "caption": f"A box number {i}."}, {"image_id": 10 + i, "caption": "a box"}]
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    corpus = C.coco_corpus(str(path), str(tmp_path), size=12)
    assert corpus.images.shape == (5, 3, 12, 12)
    assert corpus.captions[2] == ["A box number 2.", "a box"]
    train, held = C.split_corpus(corpus, 0.4, seed=1)
    assert len(train) == 3 and len(held) == 2
    assert sorted(c[0] for c in train.captions + held.captions) == sorted(c[0] for c in corpus.captions)
    assert_raises_naming(ValueError, "val_fraction", C.split_corpus, corpus, 1.0)


def test_train_checkpoint_load_and_decode(tmp_path, corpus):
    vocab = shapes_vocabulary()
    model = small_model(vocab, corpus)
    last = C.fit(model, vocab, corpus, steps=4, out_dir=str(tmp_path), batch_size=8, log_every=2,
                   progress=False)
    assert {"loss", "xe", "reg", "attr"} <= set(last)
    assert os.path.isfile(tmp_path / "checkpoint.pt") and os.path.isfile(tmp_path / C.BUNDLE)
    cap = C.load(str(tmp_path))
    loaded, vocab2, size = cap.nets[C.MODULE], cap.artefacts["vocab"], cap.artefacts["image_size"]
    assert vocab2 == vocab and size == 16
    model.eval()
    images = corpus.float_images()[:5]
    caps = torch.tensor([[vocab.bos_id, 5, 6, vocab.eos_id]] * 5)
    torch.testing.assert_close(loaded(images, caps)["logits"], model(images, caps)["logits"], rtol=0, atol=0)
    # Beam width 1 through the shared engine is the model's own greedy decoder.
    out = C.predict(loaded, images, num_beams=1, max_length=9)
    greedy = loaded.greedy_decode(images, max_length=9)["sequences"].tolist()
    expected = []
    for row in greedy:
        words = []
        for t in row[1:]:
            if t in (vocab.eos_id, vocab.pad_id):
                break
            words.append(t)
        expected.append(words)
    assert out["sequences"] == expected
    wide = C.predict(loaded, images, num_beams=3, max_length=9)
    assert len(wide["sequences"]) == 5 and all(len(s) <= 8 for s in wide["sequences"])
    assert wide["attributes"].shape == (5, 3)


def test_resume_continues_the_run(tmp_path, corpus):
    vocab = shapes_vocabulary()
    a = small_model(vocab, corpus)
    C.fit(a, vocab, corpus, steps=4, out_dir=str(tmp_path / "a"), batch_size=8, progress=False)
    b = small_model(vocab, corpus)
    C.fit(b, vocab, corpus, steps=2, out_dir=str(tmp_path / "b"), batch_size=8, progress=False,
            checkpoint_every=1)
    b = small_model(vocab, corpus)
    C.fit(b, vocab, corpus, steps=4, out_dir=str(tmp_path / "b"), batch_size=8, progress=False, resume=True)
    for (n, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=n)


def test_evaluate_and_caption_scores(corpus):
    vocab = shapes_vocabulary()
    model = small_model(vocab, corpus)
    sub = corpus.subset(range(6))
    scores = C.evaluate(model, vocab, sub, num_beams=2, max_length=8, meteor=False)
    for k in ("BLEU-1", "BLEU-4", "CIDEr", "attr_recall", "detector_precision"):
        assert k in scores and scores[k] >= 0
    assert scores["BLEU-1"] < 1
    perfect = C.caption_scores(sub.captions, [refs[0] for refs in sub.captions], meteor=False)
    assert perfect["BLEU-4"] == pytest.approx(1.0, abs=1e-6)


def test_explain_matches_decoding_steps(corpus):
    vocab = shapes_vocabulary()
    model = small_model(vocab, corpus).eval()
    images = corpus.float_images()[:2]
    out = C.predict(model, images, num_beams=1, max_length=6)
    att = C.explain(model, images, out["sequences"], out["attributes"])
    state = model.init_state(images, out["attributes"])["state"]
    tok = torch.full((2,), vocab.bos_id)
    with torch.no_grad():
        _, state, alpha, beta = model.step(tok, state)
    torch.testing.assert_close(att["alpha"][:, 0], alpha)
    torch.testing.assert_close(att["beta"][:, 0], beta)


def test_load_errors(tmp_path):
    assert_raises_naming(FileNotFoundError, "checkpoint", C.load, str(tmp_path))
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=C.BUNDLE):
        C.load(str(tmp_path))
    (tmp_path / C.BUNDLE).write_text("{}")
    with pytest.raises(ValueError, match="corrupt"):
        C.load(str(tmp_path))


def test_cli_train_eval_predict(tmp_path, capsys):
    run = str(tmp_path / "run")
    common = ["--scenes", "16", "--size", "16", "--seed", "1"]
    assert main(["caption", "train", "--out", run, "--steps", "3", "--batch-size", "8", "--dim", "16",
                 "--top-k", "3", *common]) == 0
    scores = str(tmp_path / "scores.json")
    assert main(["caption", "eval", "--checkpoint", run, "--beams", "2", "--max-length", "8", "--out", scores,
                 "--no-meteor", *common]) == 0
    assert "BLEU-4" in json.load(open(scores))
    from fastpapers.viz import save_image
    img = save_image(torch.rand(3, 16, 16), str(tmp_path / "img.png"))
    png = str(tmp_path / "pred.png")
    capsys.readouterr()
    assert main(["caption", "predict", img, "--checkpoint", run, "--out", png, "--max-length", "8"]) == 0
    text = capsys.readouterr().out
    assert "detector" in text and "mean α" in text and os.path.isfile(png)
    lines = text.splitlines()
    attr_rows = lines[2:5]
    assert len(attr_rows) == 3 and all(len(r.split()) == 4 for r in attr_rows)


def test_cli_bad_input(tmp_path, capsys):
    assert main(["caption", "train", "--out", str(tmp_path), "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main(["caption", "predict", str(tmp_path / "missing.png"), "--checkpoint", str(tmp_path)]) == 2
    assert main(["caption", "eval", "--checkpoint", str(tmp_path / "nowhere")]) == 2
