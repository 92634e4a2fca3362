"""Hugging Face vision-language models (rftkit/model/hf_vision.py) on a tiny random Qwen2-VL.

The model, its tokenizer (with Qwen2-VL's chat template) and its image processor are built
locally (tests/hf_fixtures.py `tiny_qwen2_vl`); nothing is downloaded. transformers' own
`Qwen2VLProcessor` and `generate` are the references: rftkit's prompt ids, engine, training
forward, LoRA, freezing and save/load are checked against them.
"""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from transformers import AutoModelForImageTextToText  # noqa: E402

from rftkit.config import load_config  # noqa: E402
from rftkit.errors import ConfigError  # noqa: E402
from rftkit.model.export import export_run, load_hf_model, save_hf_model  # noqa: E402
from rftkit.model.hf import HFCache, load_hf_policy  # noqa: E402
from rftkit.model.hf_tokenizer import HFTokenizer, load_hf_tokenizer, problem_prompt_ids  # noqa: E402
from rftkit.model.hf_vision import HFVisionPolicy  # noqa: E402
from rftkit.model.logprobs import rollout_logprobs, token_logprobs  # noqa: E402
from rftkit.model.vision import IMAGE_ID_BASE, images_in  # noqa: E402
from rftkit.rollout.base import SamplingParams  # noqa: E402
from rftkit.rollout.kv_engine import KVCacheEngine  # noqa: E402
from rftkit.train.loop import _load_hf, train  # noqa: E402
from rftkit.types import Image, Problem  # noqa: E402

from hf_fixtures import qwen2_vl_processor, tiny_qwen2, tiny_qwen2_vl, tiny_tokenizer  # noqa: E402

RNG = np.random.default_rng(0)
IMAGES = [Image(RNG.integers(0, 256, (32, 48, 3), dtype=np.uint8)),  # 4x6 patches of 8 px, merged 2x2: 6 tokens
          Image(RNG.integers(0, 256, (56, 40, 3), dtype=np.uint8)),  # resized to 64x32: 8 tokens
          Image(RNG.integers(0, 256, (16, 16), dtype=np.uint8))]  # grayscale (made RGB): 1 token
FLAVOURS = ("qwen2_vl", "qwen2_5_vl")
PROMPTS = [("How many dots?", [0]), ("the quick brown fox jumps over the lazy dog", [1]),
           ("What is 12 + 30?", [0, 1]), ("reverse abc", [])]


@pytest.fixture(scope="module")
def vlm_dirs(tmp_path_factory):
    return {f: tiny_qwen2_vl(tmp_path_factory.mktemp(f), flavour=f) for f in FLAVOURS}


@pytest.fixture(scope="module")
def vlm(vlm_dirs):
    return vlm_dirs["qwen2_vl"]


@pytest.fixture(scope="module")
def tok(vlm):
    return load_hf_tokenizer(vlm)


@pytest.fixture(scope="module")
def ref(vlm):
    proc = qwen2_vl_processor(vlm)
    proc.tokenizer.padding_side = "left"
    return proc


def _messages(text, n_images):
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}]


def _reference_inputs(ref, prompts):
    """transformers' processor on the same prompts: left-padded input_ids, pixels, grids, mm types."""
    texts = [ref.apply_chat_template(_messages(q, len(ims)), add_generation_prompt=True, tokenize=False)
             for q, ims in prompts]
    pixels = [IMAGES[i].pixels for _, ims in prompts for i in ims]
    return ref(text=texts, images=pixels or None, return_tensors="pt", padding=True)


def _as_hf_ids(ids, policy_or_token_id):
    token = getattr(policy_or_token_id, "image_token_id", policy_or_token_id)
    return [i if i < IMAGE_ID_BASE else token for i in ids]


def test_prompt_ids_expand_images_like_the_processor(tok, ref):
    assert tok.processor is not None  # what env_checks.check_images reads: this model sees images
    for q, ims in PROMPTS[:3] + [("gray", [2])]:
        ids = tok.prompt_ids(q, images=[IMAGES[i] for i in ims])
        theirs = _reference_inputs(ref, [(q, ims)])["input_ids"][0].tolist()
        assert _as_hf_ids(ids, ref.image_token_id) == theirs  # same length, same text ids, pads where theirs are
        assert images_in(ids) == [IMAGES[i] for i in dict.fromkeys(ims)]  # the rows name their images
        assert tok.decode(ids) == tok.hf.decode(theirs, skip_special_tokens=True)  # image ids decode to nothing
    assert sum(i >= IMAGE_ID_BASE for i in tok.prompt_ids("x", images=[IMAGES[0]])) == 6
    assert sum(i >= IMAGE_ID_BASE for i in tok.prompt_ids("x", images=[IMAGES[2]])) == 1
    # a problem with images, plain or in chat format, goes through problem_prompt_ids
    p = Problem(task="t", prompt="How many dots?", answer="3", verifier="exact", images=(IMAGES[0],))
    chat = Problem(task="t", prompt="x", answer="3", verifier="exact", images=(IMAGES[0],),
                   meta={"messages": [{"role": "user", "content": "How many dots?"}]})
    assert problem_prompt_ids(tok, p) == problem_prompt_ids(tok, chat) == tok.prompt_ids("How many dots?",
                                                                                         images=[IMAGES[0]])
    assert tok.prompt_ids("reverse abc") == _reference_inputs(ref, [("reverse abc", [])])["input_ids"][0].tolist()
    plain = HFTokenizer(tok.hf, chat_template=False, processor=tok.processor)  # no template: Qwen's markup, then text
    ids = plain.prompt_ids("abc", images=[IMAGES[0]])
    assert tok.hf.decode(ids[:1]) == "<|vision_start|>" and ids[7:] == tok.encode("<|vision_end|>abc")
    text_template = HFTokenizer(tiny_tokenizer("qwen2"), processor=tok.processor)  # renders no image parts
    with pytest.raises(ValueError, match="0 image tokens for 1 images"):
        text_template.prompt_ids("abc", images=[IMAGES[0]])


def test_a_text_model_refuses_images(tmp_path):
    text_tok = load_hf_tokenizer(tiny_qwen2(tmp_path / "q"))
    assert text_tok.processor is None
    with pytest.raises(ValueError, match="text-only model"):
        text_tok.prompt_ids("How many dots?", images=[IMAGES[0]])
    with pytest.raises(ValueError, match="text-only model"):
        load_hf_policy(tmp_path / "q", device="cpu", train_vision=True)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_kv_engine_equals_generate_with_images(vlm_dirs, flavour):
    tok, ref = load_hf_tokenizer(vlm_dirs[flavour]), qwen2_vl_processor(vlm_dirs[flavour])
    ref.tokenizer.padding_side = "left"
    policy = load_hf_policy(vlm_dirs[flavour], device="cpu").eval()
    assert isinstance(policy, HFVisionPolicy)
    prompts = [tok.prompt_ids(q, images=[IMAGES[i] for i in ims]) for q, ims in PROMPTS]
    assert len({len(p) for p in prompts}) == 4  # different lengths: left padding is exercised
    gen = KVCacheEngine(policy, tok, max_batch=8).generate(prompts, SamplingParams(n=2, max_new_tokens=20,
                                                                                    temperature=0.0))
    inputs = _reference_inputs(ref, [p for p in PROMPTS for _ in range(2)])
    theirs = policy.model.generate(**inputs, do_sample=False, max_new_tokens=20, pad_token_id=tok.pad_id,
                                   eos_token_id=tok.eos_id)[:, inputs["input_ids"].shape[1]:]
    for row in range(8):
        p, n = prompts[row // 2], int(gen.mask[row].sum())
        want = theirs[row].tolist()
        want = want[: want.index(tok.eos_id) + 1] if tok.eos_id in want else want
        assert gen.tokens[row, len(p): len(p) + n].tolist() == want
    assert len({tuple(gen.tokens[r, len(prompts[r // 2]):].tolist()) for r in range(0, 8, 2)}) == 4  # images matter
    # `generate_inputs` (for engines that call `generate`) rebuilds the processor's inputs from our rows
    rows = [p for p in prompts for _ in range(2)]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tok.pad_id] * (width - len(r)) + r for r in rows])
    ours = policy.generate_inputs(ids, inputs["attention_mask"])
    for key in ("input_ids", "pixel_values", "image_grid_thw", "mm_token_type_ids"):
        assert torch.equal(ours[key], inputs[key].to(ours[key].dtype)), key


def test_cache_select_carries_the_rope_deltas(vlm, tok):
    policy = load_hf_policy(vlm, device="cpu").eval()
    prompts = [tok.prompt_ids(q, images=[IMAGES[i] for i in ims]) for q, ims in PROMPTS[:3]]
    plen = max(len(p) for p in prompts)
    ids = torch.tensor([[tok.pad_id] * (plen - len(p)) + p for p in prompts])
    key_mask = torch.cat([ids.new_tensor([[0] * (plen - len(p)) + [1] * len(p) for p in prompts]).bool(),
                          torch.ones(3, 1, dtype=torch.bool)], 1)
    pos = (key_mask[:, :plen].long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        cache = policy.new_cache(3, plen + 1)
        nxt = policy(ids, positions=pos, key_mask=key_mask, cache=cache)[:, -1].argmax(-1)
        deltas = cache.rope_deltas.clone()
        cache.select(torch.tensor([2, 0]))
        assert torch.equal(cache.rope_deltas, deltas[[2, 0]])
        kept = policy(nxt[[2, 0], None], positions=pos[[2, 0], -1:] + 1, key_mask=key_mask[[2, 0]], cache=cache)
        alone = [policy(torch.tensor([prompts[i] + [int(nxt[i])]]))[:, -1] for i in (2, 0)]
    assert bool((deltas != 0).all())  # image rows: M-RoPE positions run behind the token count
    with torch.no_grad():  # hidden(): what the LM head reads (a critic's input), images included
        x = torch.tensor([prompts[2]])
        assert torch.allclose(policy.hf_model.lm_head(policy.hidden(x)), policy(x), atol=1e-5)
    assert torch.allclose(kept[:, -1], torch.cat(alone), atol=1e-5)
    assert HFCache(None, 8).rope_deltas is None  # text models: nothing to carry


def _rollouts(policy, tok, temperature=1.0):
    prompts = [tok.prompt_ids(q, images=[IMAGES[i] for i in ims]) for q, ims in PROMPTS]
    return KVCacheEngine(policy, tok).generate(prompts, SamplingParams(n=2, max_new_tokens=12,
                                                                       temperature=temperature, seed=3))


def test_training_forward_equals_hf_forward_with_pixels(vlm, tok, ref):
    policy = load_hf_policy(vlm, device="cpu").eval()
    gen = _rollouts(policy, tok, temperature=0.7)
    lp, _ = token_logprobs(policy, gen.tokens, 0.7)
    assert gen.mask.sum() > 30
    assert (lp * gen.mask - gen.logp).abs().max() < 1e-4  # what the engine sampled is what the trainer scores
    for row in range(0, 8, 2):  # the plain HF forward, one row at a time, pixels from the image processor
        n = int(gen.prompt_lens[row] + gen.mask[row].sum())
        ids = gen.tokens[row, :n].tolist()
        ims = images_in(ids)
        hf_ids = torch.tensor([_as_hf_ids(ids, policy)])
        kw = {}
        if ims:
            px = ref.image_processor(images=[im.pixels for im in ims], return_tensors="pt")
            kw = dict(pixel_values=px["pixel_values"], image_grid_thw=px["image_grid_thw"],
                      mm_token_type_ids=(hf_ids == policy.image_token_id).int())
        with torch.no_grad():
            logits = policy.model(input_ids=hf_ids, **kw).logits.float() / 0.7
        want = logits[0, :-1].log_softmax(-1).gather(-1, hf_ids[0, 1:, None]).squeeze(-1)
        trained = gen.mask[row, 1:n] > 0
        assert (lp[row, 1:n][trained] - want[trained]).abs().max() < 1e-5
    # the shared-prefix forward (each distinct prompt and its images once) equals the plain one, gradients too
    policy.train()
    shared, _ = rollout_logprobs(policy, gen.tokens, gen.mask)
    plain, _ = token_logprobs(policy, gen.tokens)
    grads = [torch.autograd.grad((x * gen.mask).sum(), policy.trainable_parameters()[-1])[0] for x in (shared, plain)]
    assert ((shared - plain) * gen.mask).abs().max() < 1e-5 and torch.allclose(*grads, atol=1e-5)


def _one_step(policy, tok):
    ids = torch.tensor([tok.prompt_ids("How many dots?", images=[IMAGES[0]]) + tok.encode("three") + [tok.eos_id]])
    before = {k: p.detach().clone() for k, p in policy.named_parameters()}
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-2)
    (-token_logprobs(policy, ids)[0].sum()).backward()
    opt.step()
    return {k for k, p in policy.named_parameters() if not torch.equal(p, before[k])}


def test_vision_tower_is_frozen_unless_train_vision(vlm, tok):
    lora = load_hf_policy(vlm, device="cpu", lora={"r": 4})
    trainable = {k for k, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in k and ".visual." not in k for k in trainable)  # adapters on the LM only
    assert _one_step(lora, tok) <= trainable  # the base and the vision tower did not move
    lora_vision = load_hf_policy(vlm, device="cpu", lora={"r": 4}, train_vision=True)
    assert any(".visual." in k and "lora_" in k for k, p in lora_vision.named_parameters() if p.requires_grad)
    full = load_hf_policy(vlm, device="cpu")
    changed = _one_step(full, tok)
    assert any(".language_model." in k for k in changed) and not any(".visual." in k for k in changed)
    assert not any(p.requires_grad for k, p in full.named_parameters() if ".visual." in k)
    vision = load_hf_policy(vlm, device="cpu", train_vision=True)
    assert any(".visual." in k for k in _one_step(vision, tok))  # train_vision: the tower learns


def test_the_train_vision_key_reaches_the_loader(vlm):
    for key, want in (("true", True), ("false", False)):
        cfg = load_config(None, [f"model.path={vlm}", "model.device=cpu", f"model.train_vision={key}"],
                          base={"stages": []})
        policy, _ = _load_hf(cfg)
        assert {p.requires_grad for k, p in policy.named_parameters() if ".visual." in k} == {want}


def test_a_vlm_without_processor_files_is_a_clear_error(tmp_path):
    folder = tiny_qwen2_vl(tmp_path / "vlm", processor=False)
    for load in (lambda: load_hf_policy(folder, device="cpu"), lambda: load_hf_tokenizer(folder)):
        with pytest.raises(FileNotFoundError, match="no image processor") as e:
            load()
        assert str(folder) in str(e.value) and "preprocessor_config.json" in str(e.value)
    cfg = load_config(None, [f"model.path={folder}", "model.device=cpu"], base={"stages": []})
    with pytest.raises(ConfigError, match="model.path: .*no image processor"):
        _load_hf(cfg)


@pytest.mark.parametrize("lora", [None, {"r": 4}])
def test_save_load_and_export_keep_a_vlm(vlm, tok, tmp_path, lora):
    policy = load_hf_policy(vlm, device="cpu", lora=lora, train_vision=lora is None)
    _one_step(policy, tok)
    ids = torch.tensor([tok.prompt_ids("What is 12 + 30?", images=[IMAGES[0], IMAGES[1]])])
    with torch.no_grad():
        want = policy.eval()(ids)
    save_hf_model(policy, tok, tmp_path / "run" / "models" / "rl")
    again, tok2 = load_hf_model(tmp_path / "run" / "models" / "rl", device="cpu")
    assert isinstance(again, HFVisionPolicy) and tok2.processor is not None
    assert again.train_vision == (lora is None)  # a trained vision tower stays trainable
    assert tok2.prompt_ids("What is 12 + 30?", images=[IMAGES[0], IMAGES[1]]) == ids[0].tolist()
    with torch.no_grad():
        assert torch.equal(again.eval()(ids), want)
    out = export_run(tmp_path / "run", tmp_path / "export")
    assert (out / "preprocessor_config.json").is_file()
    hf = AutoModelForImageTextToText.from_pretrained(out).eval()
    assert not any("lora" in k for k in hf.state_dict())
    reloaded = load_hf_policy(out, device="cpu").eval()
    with torch.no_grad():
        assert (reloaded(ids) - want).abs().max() < 1e-4
    assert json.loads((out / "rftkit_export.json").read_text())["kind"] in ("merged LoRA", "full fine-tuning")


def test_sft_then_grpo_on_vision_count_trains_a_tiny_vlm(vlm, tmp_path):
    """rftkit's `train()` end to end on images: the visual counting task's prompts reach the
    VLM through its chat template, SFT on the demos then 2 GRPO steps run, the language model
    moves and the (default frozen) vision tower does not, and the saved model is a VLM again."""
    cfg = load_config(None, [
        f"out_dir={tmp_path / 'runs'}", f"model.path={vlm}", "model.device=cpu", "data.tasks=[{name: vision_count}]",
        "data.train_size=8", "data.test_size=2", "data.ood_size=0", "progress=false",
        "rollout.group_size=2", "rollout.max_new_tokens=8", "eval.n_samples=2", "eval.ks=[1,2]", "eval.splits=[test]",
        "stages=[{name: sft, steps: 1, batch_size: 4, lr: 0.01, objectives: [{name: sft}]},"
        " {name: rl, steps: 2, batch_size: 2, lr: 0.001, objectives: [{name: policy}]}]"], base={"stages": []})
    run = train(cfg)
    rows = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if r.get("stage") == "rl" and "reward/mean" in r]) == 2
    assert all(v == v for r in rows for v in r.values() if isinstance(v, float))  # finite metrics (no NaN)
    model, tok = load_hf_model(run.dir / "models" / "rl", device="cpu")
    assert isinstance(model, HFVisionPolicy) and tok.processor is not None
    start = dict(load_hf_policy(vlm, device="cpu").named_parameters())
    changed = {k for k, p in model.named_parameters() if not torch.equal(p, start[k])}
    assert any(".language_model." in k for k in changed) and not any(".visual." in k for k in changed)
