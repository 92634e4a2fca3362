"""Hugging Face models behind rftkit's model protocol: engine equivalence, LoRA, export, chat masking.

Tiny random Qwen2 (no bos, tied embeddings) and Llama (bos, untied) models are built with
`transformers` configs and saved to a temp dir (tests/hf_fixtures.py); nothing is downloaded.
"""

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from rftkit.model.export import (  # noqa: E402
    checkpoint_tensors,
    export_run,
    load_checkpoint_tensors,
    load_hf_model,
    save_hf_model,
)
from rftkit.model.hf import BaseModelView, HFPolicy, disabled_adapters, load_hf_policy  # noqa: E402
from rftkit.model.hf_tokenizer import load_hf_tokenizer, problem_prompt_ids  # noqa: E402
from rftkit.model.io import build_model, save_model  # noqa: E402
from rftkit.model.logprobs import token_logprobs  # noqa: E402
from rftkit.model.tokenizer import CharTokenizer  # noqa: E402
from rftkit.rollout.base import GENERATORS, SamplingParams  # noqa: E402
from rftkit.rollout.hf_generate import HFGenerateEngine  # noqa: E402
from rftkit.rollout.kv_engine import KVCacheEngine  # noqa: E402
from rftkit.types import Problem  # noqa: E402

from hf_fixtures import tiny_hf_model  # noqa: E402

FLAVOURS = ("qwen2", "llama")
QUESTIONS = ["What is 12 + 30?", "reverse abc",
             "the quick brown fox jumps over the lazy dog. Let's think step by step."]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    return {f: tiny_hf_model(tmp_path_factory.mktemp(f), f) for f in FLAVOURS}


def _load(model_dirs, flavour, **kw):
    return load_hf_policy(model_dirs[flavour], device="cpu", **kw), load_hf_tokenizer(model_dirs[flavour])


def _left_padded(prompts, pad_id):
    plen = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), plen), pad_id)
    attn = torch.zeros((len(prompts), plen), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, plen - len(p):] = torch.tensor(p)
        attn[i, plen - len(p):] = 1
    return ids, attn


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_policy_has_the_builtin_model_interface(model_dirs, flavour):
    policy, tok = _load(model_dirs, flavour)
    assert isinstance(policy, HFPolicy) and policy.cfg.max_seq_len == 256 and policy.cfg.d_model == 64
    assert next(policy.parameters()).dtype == torch.float32 and next(policy.parameters()).device.type == "cpu"
    ids = torch.tensor([tok.prompt_ids(QUESTIONS[0])])
    assert policy(ids).shape == (1, ids.shape[1], policy.cfg.vocab_size)
    assert policy.hidden(ids).shape == (1, ids.shape[1], 64)
    assert all(p.requires_grad for p in policy.parameters())  # full fine-tuning
    bf16 = load_hf_policy(model_dirs[flavour], device="cpu", dtype="bfloat16")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hf_policy(model_dirs[flavour] / "nope", device="cpu")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_kv_engine_equals_model_generate_token_for_token(model_dirs, flavour):
    policy, tok = _load(model_dirs, flavour)
    policy.eval()
    prompts = [tok.prompt_ids(q) for q in QUESTIONS]
    assert len({len(p) for p in prompts}) == 3  # different lengths: left padding is exercised
    params = SamplingParams(n=2, max_new_tokens=24, temperature=0.0)
    gen = KVCacheEngine(policy, tok, max_batch=4).generate(prompts, params)
    ids, attn = _left_padded([p for p in prompts for _ in range(2)], tok.pad_id)
    ref = policy.model.generate(input_ids=ids, attention_mask=attn, do_sample=False, max_new_tokens=24,
                                pad_token_id=tok.pad_id, eos_token_id=tok.eos_id)[:, ids.shape[1]:]
    for row in range(6):
        p = prompts[row // 2]
        n = int(gen.mask[row].sum())
        ours = gen.tokens[row, len(p): len(p) + n].tolist()
        theirs = ref[row].tolist()
        theirs = theirs[: theirs.index(tok.eos_id) + 1] if tok.eos_id in theirs else theirs
        assert ours == theirs
        assert len(set(ours)) > 2  # a non-degenerate continuation
    fallback = HFGenerateEngine(policy, tok).generate(prompts, params)
    assert torch.equal(fallback.tokens, gen.tokens) and torch.equal(fallback.mask, gen.mask)
    assert torch.equal(fallback.truncated, gen.truncated) and fallback.texts == gen.texts
    assert torch.allclose(fallback.logp, gen.logp, atol=1e-4)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_engine_logprobs_match_the_training_forward(model_dirs, flavour, temperature):
    policy, tok = _load(model_dirs, flavour)
    prompts = [tok.prompt_ids(q) for q in QUESTIONS]
    gen = KVCacheEngine(policy, tok).generate(prompts, SamplingParams(n=2, max_new_tokens=16,
                                                                      temperature=temperature, seed=3))
    with torch.no_grad():
        lp, _ = token_logprobs(policy, gen.tokens, temperature)
    assert gen.mask.sum() > 20
    assert (lp * gen.mask - gen.logp).abs().max() < 1e-4


def test_hf_generate_engine_is_seeded_and_registered(model_dirs):
    policy, tok = _load(model_dirs, "qwen2")
    if "hf_generate" not in GENERATORS:  # rftkit/rollout/__init__.py registers it once integrated
        GENERATORS.register("hf_generate")(HFGenerateEngine)
    engine = GENERATORS.bind("hf_generate", {"max_batch": 4})(policy, tok)
    prompts = [tok.prompt_ids(q) for q in QUESTIONS]
    params = SamplingParams(n=3, max_new_tokens=12, temperature=1.0, top_k=20, seed=5)
    rng_before = torch.get_rng_state()
    a, b = engine.generate(prompts, params), engine.generate(prompts, params)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the trainer's RNG stream is untouched
    assert torch.equal(a.tokens, b.tokens) and a.tokens.shape[0] == 9
    assert ((a.logp != 0) <= (a.mask > 0)).all() and (a.logp <= 0).all()
    with torch.no_grad():
        lp, _ = token_logprobs(policy, a.tokens)
    assert (lp * a.mask - a.logp).abs().max() < 1e-4
    greedy = engine.generate(prompts, SamplingParams(n=1, max_new_tokens=12, temperature=0))
    s = greedy.texts[0][3:5]
    stop = SamplingParams(n=1, max_new_tokens=12, temperature=0, stop=(s,))
    stopped, kv = engine.generate(prompts, stop), KVCacheEngine(policy, tok).generate(prompts, stop)
    assert stopped.texts[0].endswith(s) and greedy.texts[0].startswith(stopped.texts[0])
    assert len(stopped.texts[0]) < len(greedy.texts[0]) and not stopped.truncated[0]
    assert stopped.texts == kv.texts and torch.equal(stopped.mask, kv.mask)


def _train_a_little(policy, ids, steps=3):
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=3e-2)
    for _ in range(steps):
        loss = -policy(ids[:, :-1]).float().log_softmax(-1).gather(-1, ids[:, 1:, None]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_lora_trains_adapters_only_and_the_reference_is_the_base(model_dirs, flavour):
    base, tok = _load(model_dirs, flavour)
    policy = load_hf_policy(model_dirs[flavour], device="cpu", lora={"r": 4}, gradient_checkpointing=True)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.tensor([tok.prompt_ids(QUESTIONS[2])])
    _train_a_little(policy, ids)
    base.eval(), policy.eval()
    with torch.no_grad():
        tuned, ref = policy(ids), base(ids)
        with disabled_adapters(policy):
            off = policy(ids)
        view = BaseModelView(policy)(ids)
        back_on = policy(ids)
    assert (tuned - ref).abs().max() > 1e-2  # the adapters changed the policy
    assert torch.equal(off, ref) and torch.equal(view, ref) and torch.equal(back_on, tuned)
    assert BaseModelView(policy).state_dict() == {}  # no second copy of the weights
    with pytest.raises(ValueError, match="no LoRA adapters"):
        with disabled_adapters(base):
            pass


def test_lora_save_load_checkpoint_and_merged_export(model_dirs, tmp_path):
    policy, tok = _load(model_dirs, "llama", lora={"r": 4})
    ids = torch.tensor([tok.prompt_ids(QUESTIONS[1])])
    _train_a_little(policy, ids)
    policy.eval()
    with torch.no_grad():
        want = policy(ids)
    save_hf_model(policy, tok, tmp_path / "run" / "models" / "rl")
    assert (tmp_path / "run/models/rl/adapter/adapter_config.json").is_file()
    assert not (tmp_path / "run/models/rl/model.safetensors").exists()  # adapters only, base referenced
    again, tok2 = load_hf_model(tmp_path / "run" / "models" / "rl", device="cpu")
    with torch.no_grad():
        assert torch.equal(again.eval()(ids), want)
    assert tok2.prompt_ids(QUESTIONS[1]) == ids[0].tolist()
    fresh = load_hf_policy(model_dirs["llama"], device="cpu", lora={"r": 4})
    load_checkpoint_tensors(fresh, checkpoint_tensors(policy))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(ids), want)
    out = export_run(tmp_path / "run", tmp_path / "export")
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in k for k in hf.state_dict())
    with torch.no_grad():
        assert (hf(ids).logits - want).abs().max() < 1e-4
    reloaded = AutoTokenizer.from_pretrained(out)
    assert reloaded.encode("reverse abc", add_special_tokens=False) == tok.encode("reverse abc")


def test_full_finetune_export_round_trip(model_dirs, tmp_path):
    policy, tok = _load(model_dirs, "qwen2")
    ids = torch.tensor([tok.prompt_ids(QUESTIONS[0])])
    _train_a_little(policy, ids, steps=1)
    save_hf_model(policy, tok, tmp_path / "models" / "sft")
    out = export_run(tmp_path / "models" / "sft", tmp_path / "export")
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, policy.eval()(ids))


def test_builtin_gpt_exports_as_llama_with_identical_function(tmp_path):
    tok = CharTokenizer()
    torch.manual_seed(0)
    model = build_model("nano", 64, tok).eval()
    with torch.no_grad():  # non-trivial norm weights, so a mis-mapped norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    save_model(model, tok, tmp_path / "run" / "models" / "init")
    out = export_run(tmp_path / "run", tmp_path / "export")
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    text = "add:12+3=15,carry0\n#15"
    ids = [tok.bos_id] + tok.encode(text)
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == ids
    x = torch.tensor([ids])
    with torch.no_grad():
        assert (hf(x).logits - model(x)).abs().max() < 1e-5
    prompts = [[tok.bos_id] + tok.encode(p) for p in ("add:1+2=", "sort:3,1,2=")]
    gen = KVCacheEngine(model, tok).generate(prompts, SamplingParams(max_new_tokens=10, temperature=0))
    ids_, attn = _left_padded(prompts, tok.pad_id)
    ref = hf.generate(input_ids=ids_, attention_mask=attn, do_sample=False, max_new_tokens=10,
                      pad_token_id=tok.pad_id, eos_token_id=tok.eos_id)[:, ids_.shape[1]:]
    for i, p in enumerate(prompts):
        n = int(gen.mask[i].sum())
        assert gen.tokens[i, len(p): len(p) + n].tolist() == ref[i, :n].tolist()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_chat_template_masking_covers_exactly_the_assistant_answer(model_dirs, flavour):
    """rftkit trains mask = 1 after the prompt: with the prompt rendered through the template,
    those are exactly the assistant's answer tokens and its end-of-turn token."""
    tok = load_hf_tokenizer(model_dirs[flavour], system_prompt="Think step by step.")
    answer = "First add the tens. The answer is #42."
    problem = Problem(task="t", prompt="What is 12 + 30?", answer="42", verifier="exact")
    prompt = problem_prompt_ids(tok, problem)
    completion = tok.encode(answer) + [tok.eos_id]
    tokens, mask = prompt + completion, [0] * len(prompt) + [1] * len(completion)
    convo = [{"role": "system", "content": "Think step by step."}, {"role": "user", "content": problem.prompt},
             {"role": "assistant", "content": answer}]
    full = tok.encode(tok.hf.apply_chat_template(convo, tokenize=False))
    assert full[: len(tokens)] == tokens  # our layout is the template's conversation
    assert tok.hf.decode(full[len(tokens):]).strip() == ""  # after the end-of-turn: at most whitespace
    trained = [t for t, m in zip(tokens, mask) if m]
    assert tok.hf.decode(trained[:-1]) == answer and trained[-1] == tok.eos_id
    assert "Think step by step." in tok.hf.decode(prompt) and "Think" not in tok.hf.decode(trained)
    if flavour == "qwen2":  # no bos token: nothing is prepended
        assert not tok.has_bos and tok.hf.convert_ids_to_tokens(prompt[0]) == "<|im_start|>"
    else:  # the template writes bos; it is not doubled
        assert tok.has_bos and prompt[0] == tok.bos_id and prompt.count(tok.bos_id) == 1
    chat = Problem(task="t", prompt="x", answer="42", verifier="exact",
                   meta={"messages": [{"role": "user", "content": problem.prompt}]})
    assert problem_prompt_ids(tok, chat) == prompt


def test_problem_prompt_ids_keeps_the_builtin_layout():
    tok = CharTokenizer()
    p = Problem(task="t", prompt="add:1+2=", answer="3", verifier="exact")
    assert problem_prompt_ids(tok, p) == [tok.bos_id] + tok.encode("add:1+2=")


def test_cache_select_keeps_rows_and_bf16_policy_decodes(model_dirs):
    policy, tok = _load(model_dirs, "llama")
    policy.eval()
    prompts = [tok.prompt_ids(q) for q in QUESTIONS]
    ids, attn = _left_padded(prompts, tok.pad_id)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    key_mask = torch.cat([attn.bool(), torch.ones(3, 1, dtype=torch.bool)], 1)
    with torch.no_grad():
        cache = policy.new_cache(3, ids.shape[1] + 1)
        nxt = policy(ids, positions=pos, key_mask=key_mask, cache=cache)[:, -1].argmax(-1)
        full = policy(nxt[:, None], positions=pos[:, -1:] + 1, key_mask=key_mask, cache=cache)[:, -1]
        cache2 = policy.new_cache(3, ids.shape[1] + 1)
        policy(ids, positions=pos, key_mask=key_mask, cache=cache2)
        cache2.select(torch.tensor([0, 2]))
        kept = policy(nxt[[0, 2], None], positions=pos[[0, 2], -1:] + 1, key_mask=key_mask[[0, 2]], cache=cache2)
    assert cache.length == cache2.length == ids.shape[1] + 1
    assert torch.allclose(kept[:, -1], full[[0, 2]], atol=1e-5)
    bf16 = load_hf_policy(model_dirs["llama"], device="cpu", dtype="bf16")
    gen = KVCacheEngine(bf16, tok).generate(prompts, SamplingParams(max_new_tokens=8, temperature=0))
    assert gen.mask.sum() > 0 and torch.isfinite(gen.logp).all()


def test_bf16_mixed_keeps_float32_weights_and_runs_under_autocast(model_dirs):
    policy, tok = _load(model_dirs, "qwen2", dtype="bf16-mixed")
    assert next(policy.parameters()).dtype == torch.float32
    ids = torch.tensor([tok.prompt_ids(QUESTIONS[0])])
    assert policy(ids).dtype == torch.bfloat16  # the matmuls ran in bf16
    gen = KVCacheEngine(policy, tok).generate([ids[0].tolist()], SamplingParams(max_new_tokens=6, temperature=1.0))
    with torch.no_grad():
        lp, _ = token_logprobs(policy, gen.tokens)
    assert (lp * gen.mask - gen.logp).abs().max() < 0.1  # bf16 forwards of different shapes: close, not exact
