"""ProRL reference reset with full fine-tuning: the reference becomes the policy and the
optimizer is re-initialized (arXiv:2505.24864, section 2.2)."""

import copy
from types import SimpleNamespace

import torch

from rftkit.model.gpt import GPT, SIZES, GPTConfig
from rftkit.train.loop import _reset_reference


def test_full_finetuning_reset_copies_the_policy_and_clears_the_optimizer():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, max_seq_len=16, **SIZES["nano"]))
    ref = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    ids = torch.randint(0, 20, (2, 8))
    model(ids).logsumexp(-1).mean().backward()
    opt.step()
    assert opt.state and any(not torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))
    _reset_reference(SimpleNamespace(model=model), SimpleNamespace(ref_model=ref, optimizer=opt))
    assert not opt.state  # fresh Adam moments and step counts
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))
    with torch.no_grad():
        assert torch.equal(model(ids), ref(ids))
    opt.zero_grad()
    model(ids).logsumexp(-1).mean().backward()
    opt.step()  # the optimizer starts again from step 1
    assert all(float(s["step"]) == 1.0 for s in opt.state.values())
