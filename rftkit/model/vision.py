"""Images in the token stream: image tokens that name their image, and the built-in patch encoder.

A prompt with images is laid out like Qwen2-VL's or LLaVA's: each image becomes a run of
placeholder tokens that the model replaces by the image's patch features. Here the
placeholder ids also *name* the image: token k of image `img` is

    IMAGE_ID_BASE + (img.key << 16) + k        (img.key: the image's 40-bit content hash)

so a token sequence carries its images with it. Everything that moves token ids around (the
rollout engine's prompt dedup, cache row selection, the shared-prefix forward, minibatching,
checkpointed buffers) works on image prompts unchanged, and only the embedding step looks
the pixels up in this process's image bank (`remember`, filled when a prompt is encoded).
The bank holds the problems' own `Image` objects (references, not copies), so it costs no
memory beyond the pools; it is never emptied during a run.
The ids lie far above any vocabulary: they are never sampled, never trained (they sit in the
prompt, mask 0) and decode to nothing.

The built-in VLM (`PatchEncoder`, used by rftkit.model.gpt.GPT when its config has a
`vision` section) is a ViT in miniature: a conv patchifier, learned position embeddings, a few
pre-norm transformer layers and a linear map into the language model's width (Dosovitskiy et
al. 2021; the projector design of LLaVA, Liu et al. 2023). Images are resized to
`image_size` first.

Shapes: ids [B, T] long; pixels [U, 3, S, S] float in [0, 1] (U distinct images, S =
image_size); features [U, P, D] (P = (S / patch)^2 tokens per image, D = d_model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rftkit.types import Image

IMAGE_ID_BASE = 1 << 32
_SLOT_BITS = 16
_BANK: dict[int, Image] = {}


def remember(image: Image) -> Image:
    """Put an image in this process's bank (by key) so that its tokens can be embedded."""
    _BANK.setdefault(image.key, image)
    return image


def recall(key: int) -> Image:
    if key not in _BANK:
        raise KeyError(f"image token names image {key:010x}, which this process has not seen: images are "
                       f"remembered when their prompt is encoded (rftkit.model.hf_tokenizer.problem_prompt_ids)")
    return _BANK[key]


def image_token_ids(image: Image, n_tokens: int) -> list[int]:
    """The n_tokens placeholder ids of one image (see the module docstring); remembers it."""
    if not 0 < n_tokens <= 1 << _SLOT_BITS:
        raise ValueError(f"an image takes 1..{1 << _SLOT_BITS} tokens, got {n_tokens}")
    remember(image)
    first = IMAGE_ID_BASE + (image.key << _SLOT_BITS)
    return list(range(first, first + n_tokens))


def is_image_token(ids: Tensor) -> Tensor:
    return ids >= IMAGE_ID_BASE


def split_image_tokens(ids: Tensor) -> tuple[Tensor, Tensor]:
    """Image token ids [K] -> (image keys [K], token index within its image [K])."""
    rel = ids - IMAGE_ID_BASE
    return rel >> _SLOT_BITS, rel & ((1 << _SLOT_BITS) - 1)


def images_in(ids: list[int]) -> list[Image]:
    """The distinct images a token sequence names, in order of first appearance."""
    keys = dict.fromkeys((i - IMAGE_ID_BASE) >> _SLOT_BITS for i in ids if i >= IMAGE_ID_BASE)
    return [recall(k) for k in keys]


def text_ids(ids: list[int]) -> list[int]:
    """`ids` without image tokens (what a tokenizer decodes)."""
    return [i for i in ids if i < IMAGE_ID_BASE]


@dataclass(frozen=True)
class VisionConfig:
    """The built-in patch encoder: images resized to image_size x image_size, cut into
    patch x patch squares (image_size / patch)^2 tokens each, `layers` transformer layers of
    width d_vision."""

    image_size: int = 32
    patch: int = 8
    d_vision: int = 96
    layers: int = 2
    heads: int = 4

    def __post_init__(self) -> None:
        if self.image_size % self.patch:
            raise ValueError(f"vision.image_size {self.image_size} is not a multiple of vision.patch {self.patch}")
        if self.d_vision % self.heads:
            raise ValueError(f"vision.d_vision {self.d_vision} is not a multiple of vision.heads {self.heads}")

    @property
    def n_tokens(self) -> int:
        return (self.image_size // self.patch) ** 2

    def to_dict(self) -> dict:
        return asdict(self)


class PatchEncoder(nn.Module):
    """pixels [U, 3, S, S] in [0, 1] -> features [U, P, d_model] (a tiny ViT and a projector)."""

    def __init__(self, cfg: VisionConfig, d_model: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.patchify = nn.Conv2d(3, cfg.d_vision, cfg.patch, stride=cfg.patch)
        self.pos = nn.Parameter(torch.randn(cfg.n_tokens, cfg.d_vision) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.d_vision, cfg.heads, 4 * cfg.d_vision, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        # layers 0: patches go straight to the projector (a linear patch embedding, as in Fuyu)
        self.layers = (nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False) if cfg.layers
                       else nn.Identity())
        self.norm = nn.LayerNorm(cfg.d_vision)
        self.proj = nn.Linear(cfg.d_vision, d_model)
        # Features start at the scale of the GPT's token embeddings (std 0.02): with PyTorch's
        # default init they are ten times larger, and the language model learns to ignore them
        # (the encoder's gradient then vanishes and the model never reads the image).
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, pixels: Tensor) -> Tensor:
        x = self.patchify(pixels * 2 - 1).flatten(2).transpose(1, 2) + self.pos  # [U, P, Dv]
        return self.proj(self.norm(self.layers(x)))


def pixel_batch(images: list[Image], size: int, device, dtype=torch.float32) -> Tensor:
    """Images -> float [U, 3, size, size] in [0, 1]; other sizes are resized (bilinear, antialiased)."""
    out = []
    for im in images:
        x = torch.from_numpy(im.pixels.copy()).permute(2, 0, 1).float().div_(255)
        if im.size != (size, size):
            x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        out.append(x)
    return torch.stack(out).to(device=device, dtype=dtype)


def embed_with_images(embed: nn.Embedding, encoder: PatchEncoder, ids: Tensor) -> Tensor:
    """ids [B, T] -> embeddings [B, T, D]: text ids through `embed`, image tokens replaced by
    their image's patch features (each distinct image encoded once per call)."""
    img = is_image_token(ids)
    if not bool(img.any()):
        return embed(ids)
    x = embed(ids.masked_fill(img, 0))
    keys, slot = split_image_tokens(ids[img])
    uniq, inverse = torch.unique(keys, return_inverse=True)
    if int(slot.max()) >= encoder.cfg.n_tokens:
        raise ValueError(f"a prompt has {int(slot.max()) + 1} tokens for one image; this model's encoder gives "
                         f"{encoder.cfg.n_tokens} (vision.image_size / vision.patch squared)")
    pixels = pixel_batch([recall(int(k)) for k in uniq.tolist()], encoder.cfg.image_size, ids.device,
                         encoder.pos.dtype)
    feats = encoder(pixels)  # [U, P, D]
    return x.masked_scatter(img[..., None], feats[inverse, slot].to(x.dtype))


__all__ = ["IMAGE_ID_BASE", "PatchEncoder", "VisionConfig", "embed_with_images", "image_token_ids", "images_in",
           "is_image_token", "pixel_batch", "recall", "remember", "split_image_tokens", "text_ids"]
