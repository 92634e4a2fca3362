"""The built-in VLM: image tokens that name their image, batching and padding with images, the
engine against a naive sampler, the shared-prefix forward, and what the loss sees."""

import numpy as np
import pytest
import torch

from rftkit.model.gpt import GPT, SIZES, GPTConfig
from rftkit.model.hf_tokenizer import problem_prompt_ids
from rftkit.model.io import build_model, load_model, save_model
from rftkit.model.logprobs import rollout_logprobs, token_logprobs
from rftkit.model.tokenizer import CharTokenizer
from rftkit.model.vision import IMAGE_ID_BASE, image_token_ids, images_in, is_image_token, text_ids
from rftkit.rollout.base import SamplingParams
from rftkit.rollout.kv_engine import KVCacheEngine
from rftkit.types import Image, Problem

VISION = {"image_size": 16, "patch": 8, "d_vision": 32, "layers": 1, "heads": 2}


def _images(n, seed=0, size=16):
    rng = np.random.default_rng(seed)
    return [Image(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _vlm(seed=0):
    torch.manual_seed(seed)
    tok = CharTokenizer()
    return build_model("nano", 96, tok, VISION).eval(), tok


def _prompts(tok):
    """Rows with one image, two images (frames), no image, and text of different lengths."""
    a, b, c = _images(3)
    probs = [Problem("t", "count=", "1", "exact", images=(a,)), Problem("t", "what changed now=", "x", "exact",
             images=(b, c)), Problem("t", "x=", "1", "exact"), Problem("t", "count=", "1", "exact", images=(c,))]
    return [problem_prompt_ids(tok, p) for p in probs]


def test_image_conversions_and_keys():
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4)
    rgba = np.dstack([np.full((4, 4, 3), 7, np.uint8), np.zeros((4, 4), np.uint8)])
    assert Image(gray).pixels.shape == (4, 4, 3) and (Image(gray).pixels[..., 2] == gray).all()
    assert (Image(rgba).pixels == 7).all()  # alpha dropped
    assert Image(np.full((4, 4, 3), 1.0)).pixels.max() == 255  # floats in [0, 1] scaled
    assert Image(gray) == Image(gray.copy()) and hash(Image(gray)) == Image(gray).key
    assert Image(gray) != Image(gray.T.copy())
    with pytest.raises(ValueError, match="shape"):
        Image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="0..255"):
        Image(np.full((2, 2), 300))
    import pickle

    assert pickle.loads(pickle.dumps(Image(gray))) == Image(gray)


def test_prompt_layout_names_its_images_and_decodes_without_them():
    model, tok = _vlm()
    im = _images(2)
    ids = problem_prompt_ids(tok, Problem("t", "ab=", "1", "exact", images=tuple(im)))
    assert ids[0] == tok.bos_id and len(ids) == 1 + 2 * tok.image_tokens + 3
    assert ids[1:1 + tok.image_tokens] == image_token_ids(im[0], tok.image_tokens)
    assert images_in(ids) == im and tok.decode(ids) == "ab=" and text_ids(ids)[1:] == tok.encode("ab=")
    assert is_image_token(torch.tensor(ids)).sum() == 2 * tok.image_tokens
    with pytest.raises(ValueError, match="text-only"):
        problem_prompt_ids(CharTokenizer(), Problem("t", "a", "1", "exact", images=(im[0],)))


def test_text_only_model_keeps_its_embedding_path():
    tok = CharTokenizer()
    model = build_model("nano", 64, tok)
    assert model.vision is None and tok.image_tokens == 0


def _naive_greedy(model, tok, prompt, steps):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            t = int(model(torch.tensor([ids]))[0, -1].argmax())
            ids.append(t)
            if t == tok.eos_id:
                break
    return ids


def test_engine_with_images_matches_a_naive_sampler_at_temperature_zero():
    model, tok = _vlm()
    prompts = _prompts(tok)
    gen = KVCacheEngine(model, tok, max_batch=3).generate(prompts, SamplingParams(n=2, max_new_tokens=10,
                                                                                  temperature=0))
    for i, p in enumerate(prompts):
        want = _naive_greedy(model, tok, p, 10)
        for row in (2 * i, 2 * i + 1):
            n = int(gen.mask[row].sum())
            assert gen.tokens[row, : len(p) + n].tolist() == want


def test_the_image_changes_the_output_distribution():
    model, tok = _vlm()
    a, b = _images(2, seed=3)
    ids = [problem_prompt_ids(tok, Problem("t", "n=", "1", "exact", images=(im,))) for im in (a, b)]
    with torch.no_grad():
        la, lb = (model(torch.tensor([x]))[0, -1] for x in ids)
    assert not torch.allclose(la, lb)


def test_shared_prefix_forward_equals_plain_forward_with_images():
    model, tok = _vlm(1)
    model.train()
    gen = KVCacheEngine(model, tok).generate(_prompts(tok), SamplingParams(n=3, max_new_tokens=8, seed=2))
    tokens, mask = gen.tokens, gen.mask

    def grads(fn):
        model.zero_grad()
        lp, ent = fn()
        ((lp * mask).sum() + 0.1 * (ent * mask).sum()).backward()
        return lp.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    plain = grads(lambda: token_logprobs(model, tokens))
    fast = grads(lambda: rollout_logprobs(model, tokens, mask))
    assert torch.allclose(plain[0] * mask, fast[0] * mask, atol=1e-5)
    assert any(k.startswith("vision.") for k in plain[1])  # the encoder learns through the answer's loss
    for k in plain[1]:
        assert torch.allclose(plain[1][k], fast[1][k], atol=1e-4, rtol=1e-3), k
    assert torch.allclose(gen.logp * mask, plain[0] * mask, atol=1e-4)  # engine and trainer agree


def test_image_tokens_are_never_trained():
    """Image tokens sit in the prompt: mask 0 in rollouts and demonstrations, and the log-prob
    gathered at their positions (ids above the vocabulary) is finite and ignored."""
    from rftkit.train.batches import demo_batch

    model, tok = _vlm()
    probs = [Problem("t", "n=", "3", "exact", demo="#3", images=tuple(_images(1, seed=s))) for s in range(2)]
    gen = KVCacheEngine(model, tok).generate([problem_prompt_ids(tok, p) for p in probs],
                                             SamplingParams(n=2, max_new_tokens=4))
    img = is_image_token(gen.tokens)
    assert img.any() and not (gen.mask.bool() & img).any()
    demos = demo_batch(tok, [(p, p.demo) for p in probs], 96)
    assert not (demos.mask.bool() & is_image_token(demos.tokens)).any()
    lp, _ = token_logprobs(model, demos.tokens)
    assert torch.isfinite(lp).all()


def test_vlm_saves_and_loads(tmp_path):
    model, tok = _vlm()
    save_model(model, tok, tmp_path / "m")
    back, tok2 = load_model(tmp_path / "m")
    assert tok2.image_tokens == tok.image_tokens == 4 and back.vision is not None
    ids = torch.tensor([_prompts(tok)[0]])
    with torch.no_grad():
        assert torch.equal(model(ids), back.eval()(ids))


def test_a_missing_image_is_named():
    model, tok = _vlm()
    fake = IMAGE_ID_BASE + (12345 << 16)
    with pytest.raises(KeyError, match="has not seen"):
        model(torch.tensor([[tok.bos_id, fake]]))


def test_gptconfig_without_vision_is_unchanged():
    cfg = GPTConfig(vocab_size=10, **SIZES["nano"])
    assert cfg.to_dict()["vision"] is None and GPT(cfg).vision is None


def test_an_encoder_without_layers_is_a_linear_patch_embedding():
    torch.manual_seed(0)
    tok = CharTokenizer()
    model = build_model("nano", 64, tok, {**VISION, "layers": 0})
    ids = torch.tensor([problem_prompt_ids(tok, Problem("t", "n=", "1", "exact", images=tuple(_images(1))))])
    assert isinstance(model.vision.layers, torch.nn.Identity) and torch.isfinite(model(ids)).all()
