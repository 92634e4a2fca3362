"""Hugging Face vision-language models (Qwen2-VL / Qwen2.5-VL class) behind the built-in interface.

Prompts. `HFTokenizer.prompt_ids(prompt, images=...)` renders the chat template with the
images as content parts (`{"type": "image"}` before the text of the first user turn), which
writes one `<|vision_start|><|image_pad|><|vision_end|>` per image; each single pad is then
expanded into the N placeholder ids that *name* the image (rftkit/model/vision.py), N = what
the processor would expand it to (grid_t * grid_h * grid_w / merge_size^2 of that image's
size). So a row of token ids carries its images, and the engine's prompt dedup, cache row
selection, minibatches and checkpointed buffers work on image prompts unchanged.

Forward. `HFVisionPolicy` (the built-in interface of `HFPolicy`) turns placeholder ids back
into the model's `image_token_id`, runs the vision tower once per distinct image of the batch
(pixels from the image processor, cached by image key), hands the features to the model as
precomputed encoder outputs (`mm_encoder_outputs`, one entry per occurrence, so a GRPO group's
G rows share one encoding), and computes the multimodal RoPE (M-RoPE) positions itself:

    prefill / no-cache forward:  position_ids [3, B, T], rope_deltas [B, 1] = get_rope_index(
                                     ids, mm_token_type_ids, image_grid_thw, attention_mask=key_mask)
    decode step (cache):         position_ids = positions + rope_deltas (text: t = h = w)

The deltas live on the `HFCache` and follow its rows through `select`. Left padding gives the
same positions as `generate` (the prefill's mask drops pads, a decode position is the row's
text position + its delta), so the engine equals `model.generate(**processor(...))` token for
token at temperature 0 (tests/test_hf_vision.py). Images must come with the prompt: a forward
into a non-empty cache carries text only.

The vision tower is frozen unless `train_vision`; with LoRA it gets no adapters (PEFT's
`exclude_modules`) unless `train_vision`. Processors: `AutoProcessor` where it loads a real
processor; where it cannot (transformers builds Qwen2-VL's processor only with torchvision,
for its video half) an `ImageProcessorBundle` of the image processor, the tokenizer and the
chat template stands in: rftkit uses only those parts.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

from rftkit.model.hf import HFPolicy, autocast, require
from rftkit.model.vision import IMAGE_ID_BASE, recall, split_image_tokens
from rftkit.types import Image

PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
VISION_TOWERS = ("model.visual", "visual", "model.vision_tower", "vision_tower", "model.vision_model")
log = logging.getLogger("rftkit.model")


def is_vlm_config(config) -> bool:
    """A vision-language model's config: it has a vision_config, or a *ForConditionalGeneration
    architecture with an image token (encoder-decoders such as T5 have none)."""
    if getattr(config, "vision_config", None) is not None:
        return True
    archs = getattr(config, "architectures", None) or []
    has_image_token = any(getattr(config, k, None) is not None for k in ("image_token_id", "image_token_index"))
    return has_image_token and any(a.endswith("ForConditionalGeneration") for a in archs)


def has_processor_files(path) -> bool:
    p = Path(str(path)).expanduser()
    return any((p / f).is_file() for f in PROCESSOR_FILES)


def _json(path, name: str) -> dict:
    p = Path(str(path)).expanduser() / name
    return json.loads(p.read_text()) if p.is_file() else {}


def _template_file(path) -> str | None:
    """A chat template stored with the processor only (older hub VLM repos: chat_template.json)."""
    jinja = Path(str(path)).expanduser() / "chat_template.jinja"
    return jinja.read_text() if jinja.is_file() else _json(path, "chat_template.json").get("chat_template")


def missing_processor_error(path) -> FileNotFoundError:
    return FileNotFoundError(
        f"model.path '{path}' is a vision-language model (its config.json has a vision part) but the folder has "
        f"no image processor ({' or '.join(PROCESSOR_FILES)}), so images cannot be turned into model inputs: copy "
        f"the processor files from the model's original folder or hub repo (preprocessor_config.json, "
        f"chat_template.json), or write them with AutoProcessor.from_pretrained(original).save_pretrained(path)")


class ImageProcessorBundle:
    """The parts of a transformers processor rftkit uses, where `AutoProcessor` cannot build one."""

    def __init__(self, image_processor, tokenizer, chat_template: str | None, image_token_id: int | None) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.image_token_id = image_token_id if image_token_id is not None else tokenizer.convert_tokens_to_ids(
            self.image_token)

    def save_pretrained(self, folder) -> None:
        self.image_processor.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))


def load_image_processor(path, trust_remote_code: bool = False):
    """The image processor of a VLM folder; a folder without one is a clear error."""
    tf = require("transformers")
    if Path(str(path)).expanduser().is_dir() and not has_processor_files(path):
        raise missing_processor_error(path)
    try:
        return tf.AutoImageProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise missing_processor_error(path) from e


def load_processor(path, tokenizer, *, trust_remote_code: bool = False):
    """The processor of a VLM folder: `AutoProcessor`'s, or an `ImageProcessorBundle`."""
    tf = require("transformers")
    images = load_image_processor(path, trust_remote_code)
    try:
        proc = tf.AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:  # e.g. a video processor that needs torchvision: the image half is enough
        log.info("AutoProcessor could not load %s (%s); using its image processor and tokenizer", path, e)
        proc = None
    if proc is not None and getattr(proc, "image_processor", None) is not None:
        return proc
    return ImageProcessorBundle(images, tokenizer, getattr(tokenizer, "chat_template", None) or _template_file(path),
                                _json(path, "config.json").get("image_token_id"))


def processor_for(path, tokenizer, trust_remote_code: bool = False):
    """A VLM folder's processor, None for a text model's. A run's LoRA model folder has no
    config.json: the processor files saved with it (export.py) mark it as a VLM's."""
    p = Path(str(path)).expanduser()
    if p.is_dir() and not (p / "config.json").is_file():
        return load_processor(path, tokenizer, trust_remote_code=trust_remote_code) if has_processor_files(p) else None
    try:
        config = require("transformers").AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError):  # the tokenizer loaded: a config transformers cannot read is not a VLM's
        return None
    return load_processor(path, tokenizer, trust_remote_code=trust_remote_code) if is_vlm_config(config) else None


def load_vlm(tf, path: str, config, **kw) -> nn.Module:
    """The model class of a VLM folder: `AutoModelForImageTextToText`, else config.architectures'."""
    auto = getattr(tf, "AutoModelForImageTextToText", None)
    if auto is not None:
        try:
            return auto.from_pretrained(path, config=config, **kw)
        except ValueError:  # an architecture the auto class does not map
            pass
    for arch in getattr(config, "architectures", None) or []:
        if hasattr(tf, arch):
            return getattr(tf, arch).from_pretrained(path, config=config, **kw)
    raise ValueError(f"model.path '{path}': no transformers class loads {config.architectures} as an image-text model")


def image_processor_of(processor):
    return getattr(processor, "image_processor", processor)


def merge_size(image_processor) -> int:
    return int(getattr(image_processor, "merge_size", None) or 1)


def image_token_count(image_processor, image: Image) -> int:
    """Placeholder tokens of one image: merged patches of the grid the processor resizes it to."""
    h, w = image.size
    if hasattr(image_processor, "get_number_of_image_patches"):
        patches = int(image_processor.get_number_of_image_patches(h, w, {}))
    else:
        patches = int(process_image(image_processor, image)[1].prod())
    return patches // merge_size(image_processor) ** 2


def process_image(image_processor, image: Image) -> tuple[Tensor, Tensor]:
    """-> (pixel_values [P, C * temporal_patch * patch^2] float32, grid_thw [3] long)."""
    out = image_processor(images=[image.pixels], return_tensors="pt", input_data_format="channels_last")
    return out["pixel_values"].float(), out["image_grid_thw"][0].long()


# --- the policy -------------------------------------------------------------------------------


class PixelCache:
    """LRU of an image processor's output per image key, bounded by bytes (large images are big)."""

    def __init__(self, image_processor, budget_bytes: int = 1 << 30) -> None:
        self.image_processor = image_processor
        self.budget = budget_bytes
        self.used = 0
        self.items: OrderedDict[int, tuple[Tensor, Tensor]] = OrderedDict()

    def get(self, key: int) -> tuple[Tensor, Tensor]:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        item = process_image(self.image_processor, recall(key))
        self.items[key] = item
        self.used += item[0].numel() * item[0].element_size()
        while self.used > self.budget and len(self.items) > 1:
            _, (old, _) = self.items.popitem(last=False)
            self.used -= old.numel() * old.element_size()
        return item

    def __deepcopy__(self, memo):  # a frozen reference copy shares nothing it would need to copy
        return PixelCache(self.image_processor, self.budget)


def vision_tower(model: nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of the vision encoder (its projector/merger included) in an HF VLM."""
    for name in VISION_TOWERS:
        mod = model
        for part in name.split("."):
            mod = getattr(mod, part, None)
        if isinstance(mod, nn.Module):
            return name, mod
    raise ValueError(f"{type(model).__name__}: no vision tower found (looked for {', '.join(VISION_TOWERS)})")


def lora_exclusions(model: nn.Module, train_vision: bool) -> dict:
    """PEFT kwargs that keep adapters off the vision tower (the language model's linears only)."""
    if train_vision:
        return {}
    name, _ = vision_tower(model)
    return {"exclude_modules": rf"(.*\.)?{re.escape(name)}(\..*)?"}


class HFVisionPolicy(HFPolicy):
    """An HF vision-language model with the built-in interface (see the module docstring).

    ids may hold image placeholder ids (>= IMAGE_ID_BASE): each contiguous run of one image's
    ids, slots 0..N-1, is one occurrence of that image.
    """

    def __init__(self, model: nn.Module, *, image_processor, source: str | None = None, lora: dict | None = None,
                 train_vision: bool = False) -> None:
        super().__init__(model, source=source, lora=lora)
        self.train_vision = train_vision
        self.image_token_id = int(model.config.image_token_id)
        self.spatial_merge = merge_size(image_processor)
        self.pixels = PixelCache(image_processor)
        hf = self.hf_model
        self.cache_kwarg = "cache" if "cache" in _params(type(hf).forward) else "past_key_values"  # renamed in v5
        inner = getattr(hf, "model", hf)
        self._takes_features = "mm_encoder_outputs" in _params(inner.forward)  # transformers >= 5
        self._rope_takes_types = "mm_token_type_ids" in _params(getattr(inner, "get_rope_index", None)
                                                                 or hf.get_rope_index)

    def _run(self, ids, positions, key_mask, cache, want_hidden: bool) -> Tensor:
        start = cache.length if cache is not None else 0
        b, t = ids.shape
        if start + t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + t} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        attn = key_mask[:, : start + t].long() if key_mask is not None else None
        kw = {"use_cache": cache is not None, "attention_mask": attn}
        img = ids >= IMAGE_ID_BASE if start == 0 else None  # decode steps carry sampled text ids only
        if img is not None and bool(img.any()):
            kw.update(self._image_inputs(ids, img, attn))
            deltas = kw.pop("rope_deltas")
            if cache is not None:  # decode steps continue each row's M-RoPE positions from here
                cache.rope_deltas = deltas
        else:
            kw["input_ids"] = ids
            if positions is None:
                positions = torch.arange(start, start + t, device=ids.device).expand(b, t)
            deltas = getattr(cache, "rope_deltas", None)
            kw["position_ids"] = positions if deltas is None else positions + deltas.to(positions.device)
        if cache is not None:
            kw[self.cache_kwarg] = cache.cache
        with autocast(self):
            if want_hidden:
                out = self.hf_model.model(**kw).last_hidden_state
            else:
                out = self.model(**kw).logits
        if cache is not None:
            cache.length += t
        return out

    def _images(self, ids: Tensor, img: Tensor) -> tuple[list[tuple[int, int]], dict[int, tuple[Tensor, Tensor]]]:
        """-> (occurrences [(image key, tokens)] in row-major order, {key: (pixel_values, grid_thw)})."""
        keys, slots = split_image_tokens(ids[img])
        occ = _occurrences(keys.tolist(), slots.tolist())
        pix = {k: self.pixels.get(k) for k, _ in occ}
        for k, n in occ:
            want = int(pix[k][1].prod()) // self.spatial_merge ** 2
            if n != want:
                raise ValueError(f"a prompt holds {n} tokens of image {k:010x}, whose processed grid gives {want}: "
                                 f"was it encoded with another model's processor?")
        return occ, pix

    def _image_inputs(self, ids: Tensor, img: Tensor, attn: Tensor | None) -> dict:
        """Model inputs of a batch with images: input_ids, position_ids [3, B, T], rope_deltas
        [B, 1], and the vision features of each image occurrence (each distinct image encoded once)."""
        occ, pix = self._images(ids, img)
        device, model = ids.device, self.hf_model
        input_ids = ids.masked_fill(img, self.image_token_id)
        occ_grid = torch.stack([pix[k][1] for k, _ in occ]).to(device)
        inner = getattr(model, "model", model)
        rope = getattr(inner, "get_rope_index", None) or model.get_rope_index
        rkw = {"image_grid_thw": occ_grid, "attention_mask": attn}
        if self._rope_takes_types:
            rkw["mm_token_type_ids"] = img.int()
        position_ids, deltas = rope(input_ids, **rkw)
        out = {"input_ids": input_ids, "position_ids": position_ids, "rope_deltas": deltas}
        if self._takes_features:
            pixel_values = torch.cat([p for p, _ in pix.values()]).to(device)
            feats = model.get_image_features(pixel_values, torch.stack([g for _, g in pix.values()]).to(device))
            by_key = dict(zip(pix, feats.pooler_output if hasattr(feats, "pooler_output") else feats))
            mo = require("transformers.modeling_outputs")
            out["mm_encoder_outputs"] = {"image": mo.BaseModelOutputWithPooling(
                pooler_output=tuple(by_key[k] for k, _ in occ))}
        else:  # older transformers: pixels per occurrence (a repeated image is encoded again)
            out["pixel_values"] = torch.cat([pix[k][0] for k, _ in occ]).to(device)
            out["image_grid_thw"] = occ_grid
        return out

    def generate_inputs(self, ids: Tensor, attention_mask: Tensor) -> dict:
        """`hf_model.generate(**...)` inputs of left-padded rows ids [B, T] that may hold image
        placeholders: the processor's layout (input_ids with the image token, pixel_values,
        image_grid_thw, mm_token_type_ids), for engines that call `generate`."""
        img = ids >= IMAGE_ID_BASE
        if not bool(img.any()):
            return {"input_ids": ids, "attention_mask": attention_mask}
        occ, pix = self._images(ids, img)
        return {"input_ids": ids.masked_fill(img, self.image_token_id), "attention_mask": attention_mask,
                "pixel_values": torch.cat([pix[k][0] for k, _ in occ]).to(ids.device),
                "image_grid_thw": torch.stack([pix[k][1] for k, _ in occ]).to(ids.device),
                "mm_token_type_ids": img.int()}


def _params(fn) -> set[str]:
    return set(inspect.signature(fn).parameters)


def _occurrences(keys: list[int], slots: list[int]) -> list[tuple[int, int]]:
    """Image placeholder ids (row-major) -> [(image key, token count)] per occurrence (a run of slots 0..N-1)."""
    occ: list[tuple[int, int]] = []
    for k, s in zip(keys, slots):
        if s == 0:
            occ.append((k, 1))
        elif occ and occ[-1][0] == k and occ[-1][1] == s:
            occ[-1] = (k, s + 1)
        else:
            raise ValueError(f"image {k:010x}'s tokens are cut or out of order (slot {s}): forwards take whole images")
    return occ


__all__ = ["HFVisionPolicy", "ImageProcessorBundle", "has_processor_files", "image_processor_of", "image_token_count",
           "is_vlm_config", "load_image_processor", "load_processor", "load_vlm", "lora_exclusions",
           "missing_processor_error", "processor_for", "vision_tower"]
