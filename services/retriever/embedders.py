"""Image and text embedders (BLIP retrieval, CLIP, SigLIP) loaded from local Hugging Face folders.

Every embedder returns float32, L2-normalised rows, so cosine similarity is a dot product.
Preprocessing is done here with PIL + numpy from the folder's processor settings (mean, std,
sizes), which avoids the torchvision-backed fast processors and lets BLIP use the GenIR/ChatIR
recipe: bicubic resize of the whole image to --image-size (no crop), CLIP mean/std, vision CLS
-> vision_proj -> L2, with the position embeddings interpolated from the checkpoint's grid.

No gRPC here: the indexer and the service both use this module.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger("genir.retriever.embedders")

FAMILIES = ("blip", "clip", "siglip")
DEFAULT_IMAGE_SIZE = 224          # GenIR/ChatIR run BLIP at 224 px
DEFAULT_TEXT_MAX_TOKENS = 200     # GenIR/ChatIR truncate BLIP captions at 200 tokens
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def detect_family(model_dir: str | Path) -> str:
    """blip / clip / siglip from config.json's model_type."""
    cfg = read_json(Path(model_dir) / "config.json")
    if not cfg:
        raise FileNotFoundError(f"{model_dir}: no config.json (expected a Hugging Face model folder)")
    kind = str(cfg.get("model_type", "")).lower()
    if kind not in FAMILIES:
        raise ValueError(f"{model_dir}: model_type {kind!r} is not one of {', '.join(FAMILIES)}")
    return kind


def image_processor_settings(model_dir: Path) -> dict:
    """The image processor block, from processor_config.json (v5 layout) or preprocessor_config.json."""
    proc = read_json(model_dir / "processor_config.json").get("image_processor")
    return proc or read_json(model_dir / "preprocessor_config.json")


def _hw(size, fallback: int) -> tuple[int, int]:
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"]), int(size["shortest_edge"])
    if isinstance(size, int):
        return size, size
    return fallback, fallback


def pick_device(device: str | None = None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class Preprocess:
    """PIL image -> float32 CHW array. `crop`: resize shortest edge then centre-crop (CLIP);
    otherwise the whole image is resized to (height, width) (BLIP/ChatIR, SigLIP)."""

    def __init__(self, height: int, width: int, mean, std, crop: bool = False, resample: int = Image.BICUBIC):
        self.height, self.width, self.crop, self.resample = height, width, crop, resample
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)

    def __call__(self, img: Image.Image) -> np.ndarray:
        img = img.convert("RGB") if img.mode != "RGB" else img
        if self.crop:
            w, h = img.size
            scale = max(self.height, self.width) / min(w, h)
            nw, nh = max(self.width, round(w * scale)), max(self.height, round(h * scale))
            img = img.resize((nw, nh), self.resample)
            left, top = (nw - self.width) // 2, (nh - self.height) // 2
            img = img.crop((left, top, left + self.width, top + self.height))
        else:
            img = img.resize((self.width, self.height), self.resample)
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (arr - self.mean) / self.std


class Embedder(ABC):
    """One model's two towers. Vectors are float32 (n, dim), L2-normalised."""

    kind: str          # "blip" | "clip" | "siglip"
    model_id: str      # stored with collections; a different id means incompatible vectors
    dim: int
    preprocess: Preprocess
    text_padding: bool | str = True   # to the longest text of a batch; "max_length" for SigLIP

    def __init__(self, model_dir: str | Path, *, device: str | None = None, batch_size: int = 32,
                 text_max_tokens: int | None = None):
        import torch

        self.model_dir = Path(model_dir)
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.dtype = torch.float32
        self._load(text_max_tokens)
        self.dim = int(self.embed_pixels(np.stack([self.preprocess(Image.new("RGB", (8, 8)))])).shape[1])

    # -- to implement -------------------------------------------------------------------------
    @abstractmethod
    def _load(self, text_max_tokens: int | None) -> None: ...

    @abstractmethod
    def _image_features(self, pixels):  # torch (b, 3, h, w) -> (b, d) unnormalised
        ...

    @abstractmethod
    def _text_features(self, enc):  # tokenizer output on device -> (b, d) unnormalised
        ...

    # -- shared -------------------------------------------------------------------------------
    def _name(self) -> str:
        cfg = read_json(self.model_dir / "config.json")
        name = cfg.get("_name_or_path") or ""
        return name if name and not name.startswith("/") else self.model_dir.resolve().name

    @staticmethod
    def _normalise(x) -> np.ndarray:
        import torch

        x = torch.nn.functional.normalize(x.float(), dim=-1)
        return x.cpu().numpy().astype(np.float32, copy=False)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Pre-processed (n, 3, h, w) float32 -> (n, dim). The indexer calls this on batches it
        decoded on worker threads."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(pixels), self.batch_size):
                t = torch.from_numpy(np.ascontiguousarray(pixels[i:i + self.batch_size])).to(self.device, self.dtype)
                out.append(self._normalise(self._image_features(t)))
        return np.concatenate(out) if out else np.zeros((0, getattr(self, "dim", 0)), np.float32)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_pixels(np.stack([self.preprocess(im) for im in images]))

    def make_batch_invariant(self) -> None:
        """Each query's vector independent of what it was batched with (services/common/batch_invariance.py):
        the image tower's linears padded and convolutions per sample, texts one at a time (a batch pads
        every text to the longest one)."""
        from services.common.batch_invariance import pad_linears, per_sample_convs

        linears, convs = pad_linears(self.model), per_sample_convs(self.model)
        self.text_batch = 1
        log.info("batch-invariant embeddings: %d linears padded, %d convs per sample, texts one at a time",
                 linears, convs)

    def _tokenize(self, texts: list[str]):
        return self.tokenizer(texts, padding=self.text_padding, truncation=True, max_length=self.text_max_tokens,
                              return_tensors="pt")

    def embed_texts(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        """(vectors, truncated): truncated[i] says text i was cut at the token limit."""
        import torch

        vecs, flags = [], []
        step = getattr(self, "text_batch", self.batch_size)
        with torch.inference_mode():
            for i in range(0, len(texts), step):
                chunk = list(texts[i:i + step])
                full = self.tokenizer(chunk, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
                flags += [len(ids) > self.text_max_tokens for ids in full]
                enc = {k: v.to(self.device) for k, v in self._tokenize(chunk).items()}
                vecs.append(self._normalise(self._text_features(enc)))
        return (np.concatenate(vecs) if vecs else np.zeros((0, self.dim), np.float32)), flags

class BlipEmbedder(Embedder):
    """BLIP image-text retrieval (ITC heads). GenIR/ChatIR preprocessing by default."""

    kind = "blip"

    def __init__(self, model_dir, *, image_size: int = DEFAULT_IMAGE_SIZE, **kw):
        self.image_size = int(image_size)
        super().__init__(model_dir, **kw)

    def _load(self, text_max_tokens):
        from transformers import AutoTokenizer, BlipForImageTextRetrieval

        self.model = BlipForImageTextRetrieval.from_pretrained(self.model_dir, dtype=self.dtype).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        vc = self.model.config.vision_config
        if self.image_size % vc.patch_size:
            raise ValueError(f"--image-size {self.image_size} is not a multiple of the patch size {vc.patch_size}")
        proc = image_processor_settings(self.model_dir)
        # No crop: ChatIR squeezes the whole image to a square, as BLIP's own eval transform does.
        self.preprocess = Preprocess(self.image_size, self.image_size, proc.get("image_mean", CLIP_MEAN),
                                     proc.get("image_std", CLIP_STD), crop=False)
        self.interpolate = self.image_size != vc.image_size
        limit = self.model.config.text_config.max_position_embeddings
        self.text_max_tokens = min(text_max_tokens or DEFAULT_TEXT_MAX_TOKENS, limit)
        self.model_id = f"blip:{self._name()}@{self.image_size}"

    def _image_features(self, pixels):
        out = self.model.vision_model(pixel_values=pixels, interpolate_pos_encoding=self.interpolate)
        return self.model.vision_proj(out.last_hidden_state[:, 0, :])

    def _text_features(self, enc):
        out = self.model.text_encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        return self.model.text_proj(out.last_hidden_state[:, 0, :])


class _TwoTowerEmbedder(Embedder):
    """CLIP and SigLIP: transformers' two-tower models, at the checkpoint's own input size unless
    `image_size` says otherwise; subclasses say how images are sized and texts padded."""

    def __init__(self, model_dir, *, image_size: int | None = None, **kw):
        self.image_size = image_size
        super().__init__(model_dir, **kw)

    model_class: str     # the transformers class name

    @abstractmethod
    def _preprocess(self, proc: dict, native: int) -> Preprocess: ...

    def _load(self, text_max_tokens):
        import transformers
        from transformers import AutoTokenizer

        model_class = getattr(transformers, self.model_class)
        self.model = model_class.from_pretrained(self.model_dir, dtype=self.dtype).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        native = self.model.config.vision_config.image_size
        self.preprocess = self._preprocess(image_processor_settings(self.model_dir), native)
        h, w = self.preprocess.height, self.preprocess.width
        self.interpolate = (h, w) != (native, native)
        limit = self.model.config.text_config.max_position_embeddings
        self.text_max_tokens = min(text_max_tokens or limit, limit)
        self.model_id = f"{self.kind}:{self._name()}@{h}"

    def _size(self, setting, native: int) -> tuple[int, int]:
        """(height, width): --image-size when given, else the processor's setting."""
        return (int(self.image_size),) * 2 if self.image_size else _hw(setting, native)

    def _image_features(self, pixels):
        # transformers v5: get_*_features return model outputs; the projection is in pooler_output.
        return self.model.get_image_features(pixel_values=pixels, interpolate_pos_encoding=self.interpolate).pooler_output


class ClipEmbedder(_TwoTowerEmbedder):
    """CLIP with its own preprocessing (shortest-edge resize + centre crop)."""

    kind, model_class, text_padding = "clip", "CLIPModel", True

    def _preprocess(self, proc, native):
        h, w = self._size(proc.get("crop_size") or proc.get("size"), native)
        return Preprocess(h, w, proc.get("image_mean", CLIP_MEAN), proc.get("image_std", CLIP_STD),
                          crop=bool(proc.get("do_center_crop", True)), resample=proc.get("resample", 3))

    def _text_features(self, enc):
        return self.model.get_text_features(input_ids=enc["input_ids"],
                                            attention_mask=enc["attention_mask"]).pooler_output


class SiglipEmbedder(_TwoTowerEmbedder):
    """SigLIP: whole-image resize, text padded to max_length (it pools the last position)."""

    kind, model_class, text_padding = "siglip", "SiglipModel", "max_length"

    def _preprocess(self, proc, native):
        h, w = self._size(proc.get("size"), native)
        return Preprocess(h, w, proc.get("image_mean", (0.5,) * 3), proc.get("image_std", (0.5,) * 3),
                          crop=False, resample=proc.get("resample", 3))

    def _text_features(self, enc):
        return self.model.get_text_features(input_ids=enc["input_ids"]).pooler_output


_CLASSES = {"blip": BlipEmbedder, "clip": ClipEmbedder, "siglip": SiglipEmbedder}


def load_embedder(model_dir: str | Path, *, image_size: int | None = None, text_max_tokens: int | None = None,
                  device: str | None = None, batch_size: int = 32, batch_invariant: bool = False) -> Embedder:
    """Auto-detects the family. image_size None = the family default (BLIP 224, others native)."""
    kind = detect_family(model_dir)
    kw = dict(device=device, batch_size=batch_size, text_max_tokens=text_max_tokens)
    if kind == "blip":
        emb = BlipEmbedder(model_dir, image_size=image_size or DEFAULT_IMAGE_SIZE, **kw)
    else:
        emb = _CLASSES[kind](model_dir, image_size=image_size, **kw)
        log.info("loaded %s (dim %d) on %s", emb.model_id, emb.dim, emb.device)
    if batch_invariant:
        emb.make_batch_invariant()
    return emb
