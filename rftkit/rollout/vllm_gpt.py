"""The built-in GPT as a vLLM model: vLLM's Llama with a plain GELU MLP.

The built-in block is x + attn(rmsnorm(x)), x + fc_out(gelu(fc(rmsnorm(x)))) with RoPE and
tied embeddings: Llama's layout except the MLP. vLLM's Llama accepts only a gated SiLU MLP, so
the layer below swaps in `fc -> gelu (erf) -> fc_out`; attention, RoPE, norms, embeddings and
the LM head are vLLM's own Llama code. The weights' names are in vllm_sync.py (`gpt_tensors`).

Imports vLLM at module level: only the vLLM engine imports this, once vLLM is installed.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn
from vllm import ModelRegistry
from vllm.model_executor.layers.activation import get_act_fn
from vllm.model_executor.layers.linear import ColumnParallelLinear, RowParallelLinear
from vllm.model_executor.models.llama import LlamaDecoderLayer, LlamaForCausalLM

from rftkit.rollout.vllm_sync import GPT_ARCH


class GeluMLP(nn.Module):
    """fc_out(gelu(fc(x))), no biases (rftkit/model/gpt.py `Block`)."""

    def __init__(self, d_model: int, hidden: int, prefix: str) -> None:
        super().__init__()
        self.fc = ColumnParallelLinear(d_model, hidden, bias=False, prefix=f"{prefix}.fc")
        self.fc_out = RowParallelLinear(hidden, d_model, bias=False, prefix=f"{prefix}.fc_out")
        self.act = get_act_fn("gelu")

    def forward(self, x: Tensor) -> Tensor:
        x, _ = self.fc(x)
        x, _ = self.fc_out(self.act(x))
        return x


class GPTDecoderLayer(LlamaDecoderLayer):
    def __init__(self, vllm_config, prefix: str = "", config=None, **kw) -> None:
        config = config or vllm_config.model_config.hf_config
        # Llama's constructor builds a gated SiLU MLP and refuses GELU: let it build a 1-wide
        # one, then replace it.
        stub = copy.copy(config)
        stub.hidden_act, stub.intermediate_size, stub.mlp_bias = "silu", 1, False
        super().__init__(vllm_config, prefix, config=stub, **kw)
        self.mlp = GeluMLP(config.hidden_size, config.intermediate_size, f"{prefix}.mlp")


class RftkitGPTForCausalLM(LlamaForCausalLM):
    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix, layer_type=GPTDecoderLayer)


def register() -> None:
    """Make `GPT_ARCH` in a config.json resolve to this class (in this process)."""
    if GPT_ARCH not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(GPT_ARCH, RftkitGPTForCausalLM)
