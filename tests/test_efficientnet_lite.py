"""EfficientNet-Lite0: the architecture, the PyTorch-checkpoint reader, the ImageNet conversion.

The conversion test is the one that catches a wrong mapping: a transposed
kernel, a swapped BatchNorm statistic or a wrong input scaling all turn the
top-1 class of a natural photograph into noise.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import types

import numpy as np
import pytest
from PIL import Image

from brainview import efficientnet_lite, torch_checkpoint
from brainview import model as model_lib

# ImageNet class indices (the standard 1000-class order).
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup


def _layer_counts(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for layer in model.layers:
        counts[type(layer).__name__] = counts.get(type(layer).__name__, 0) + 1
    return counts


def test_lite0_has_the_published_layers():
    model = efficientnet_lite.build((224, 224, 3), include_top=True)
    counts = _layer_counts(model)
    assert counts["Conv2D"] == 33
    assert counts["DepthwiseConv2D"] == 16
    assert counts["BatchNormalization"] == 49
    assert counts.get("Multiply", 0) == 0  # no squeeze-and-excitation
    assert model.count_params() == 4_694_024
    assert model.get_layer("top_activation").output.shape[1:] == (7, 7, 1280)


def _sample_photo(name: str) -> np.ndarray:
    """A photograph bundled with scikit-image (no download), 224 x 224 RGB on 0..255."""
    skimage_data = pytest.importorskip("skimage.data")
    path = os.path.join(os.path.dirname(skimage_data.__file__), f"{name}.png")
    image = Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32)


def test_imagenet_conversion_names_natural_photographs():
    model = efficientnet_lite.build((224, 224, 3), include_top=True)
    efficientnet_lite.load_imagenet_weights(model)
    photos = np.stack([_sample_photo("chelsea"), _sample_photo("coffee")])
    probabilities = model.predict(photos, verbose=0)
    top1 = probabilities.argmax(axis=1)
    assert top1[0] in CAT_CLASSES, top1
    assert top1[1] in COFFEE_CLASSES, top1
    assert probabilities.max(axis=1).min() > 0.5


def test_installed_weights_are_checked_by_sha256():
    path = efficientnet_lite.installed_imagenet_weights()
    assert os.path.basename(path).startswith("efficientnet-lite0-")


def test_classifier_backbone_gets_the_imagenet_weights():
    reference = efficientnet_lite.build((64, 64, 3))
    efficientnet_lite.load_imagenet_weights(reference)
    classifier = model_lib.build_classifier(
        64, weights="imagenet", backbone_name="efficientnet_lite0"
    )
    backbone, _ = model_lib.backbone_and_head(classifier)
    assert backbone.name == "efficientnet_lite0"
    assert model_lib.cam_layer_name(classifier) == "efficientnet_lite0/top_activation"
    for ours, theirs in zip(backbone.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_network_that_does_not_fit_is_refused():
    model = efficientnet_lite.build((64, 64, 3))
    wrong = efficientnet_lite.build((64, 64, 1))  # stem kernel 3x3x1x32: not the file's
    with pytest.raises(efficientnet_lite.WeightsFileError, match="stem_conv"):
        efficientnet_lite.load_imagenet_weights(wrong)
    efficientnet_lite.load_imagenet_weights(model)  # the same file fits the right network


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    source = efficientnet_lite.installed_imagenet_weights()
    truncated = tmp_path / "truncated.pth"
    with open(source, "rb") as file:
        truncated.write_bytes(file.read(os.path.getsize(source) // 2))
    with pytest.raises(efficientnet_lite.WeightsFileError, match="truncated"):
        efficientnet_lite.load_imagenet_weights(
            efficientnet_lite.build((64, 64, 3)), str(truncated)
        )


def test_lite0_weights_flag_accepts_a_pth_file(tmp_path):
    copy = tmp_path / "lite0.pth"
    shutil.copy(efficientnet_lite.installed_imagenet_weights(), copy)
    model = model_lib.build_classifier(64, weights=str(copy), backbone_name="efficientnet_lite0")
    assert model.count_params() > 3_000_000


# -- the legacy checkpoint reader, on files written here ---------------------------


class _Persistent:
    def __init__(self, key, storage_type, size):
        self.pid = ("storage", storage_type, key, "cpu", size)


def _write_legacy_checkpoint(
    path, tensors: dict[str, tuple[np.ndarray, tuple, tuple]], monkeypatch
) -> None:
    """Writes a legacy torch.save file: name -> (storage data, shape, strides in elements).

    Built with the standard pickler: the structure torch.save emits. The pickler
    insists that `torch._utils._rebuild_tensor_v2` be importable, so a stand-in
    module exists while writing (never while reading: the reader must not need torch).
    """
    fake_utils = types.ModuleType("torch._utils")
    fake_utils._rebuild_tensor_v2 = _RebuildStub
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    monkeypatch.setitem(sys.modules, "torch._utils", fake_utils)

    class Reduce:
        def __init__(self, key, data, shape, strides):
            self.args = (_Persistent(key, "FloatStorage", data.size), 0, shape, strides, False, {})

        def __reduce__(self):
            return (_RebuildStub, self.args)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return obj.pid if isinstance(obj, _Persistent) else None

    state = {
        name: Reduce(str(i), data, shape, strides)
        for i, (name, (data, shape, strides)) in enumerate(tensors.items())
    }
    with open(path, "wb") as file:
        for header in (torch_checkpoint.LEGACY_MAGIC_NUMBER, 1001, {"little_endian": True}):
            pickle.dump(header, file, protocol=2)
        Pickler(file, protocol=2).dump(state)
        pickle.dump([str(i) for i in range(len(tensors))], file, protocol=2)
        for data, _, _ in tensors.values():
            file.write(np.int64(data.size).tobytes())
            file.write(data.astype("<f4").tobytes())
    monkeypatch.delitem(sys.modules, "torch._utils")
    monkeypatch.delitem(sys.modules, "torch")


def _RebuildStub(*args):  # noqa: N802 - stands in for torch._utils._rebuild_tensor_v2
    raise AssertionError("never called: the reader resolves the name itself")


_RebuildStub.__module__ = "torch._utils"
_RebuildStub.__qualname__ = "_rebuild_tensor_v2"


def test_reader_honours_strides(tmp_path, monkeypatch):
    storage = np.arange(24, dtype=np.float32)
    # A (2, 3, 4) tensor stored in (4, 3, 2) memory order (like TF-converted kernels).
    logical = storage.reshape(4, 3, 2).transpose(2, 1, 0)
    path = tmp_path / "strided.pth"
    _write_legacy_checkpoint(
        path,
        {"w": (storage, (2, 3, 4), (1, 2, 6)), "b": (np.ones(3, np.float32), (3,), (1,))},
        monkeypatch,
    )
    assert "torch" not in sys.modules
    state = torch_checkpoint.load_state_dict(str(path))
    np.testing.assert_array_equal(state["w"], logical)
    np.testing.assert_array_equal(state["b"], np.ones(3))


def test_reader_refuses_code_in_the_pickle(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as file:
        for header in (torch_checkpoint.LEGACY_MAGIC_NUMBER, 1001, {"little_endian": True}):
            pickle.dump(header, file, protocol=2)
        pickle.dump({"w": Exploit()}, file, protocol=2)
    with pytest.raises(torch_checkpoint.CheckpointFormatError, match="unsupported object"):
        torch_checkpoint.load_state_dict(str(path))


def test_reader_refuses_other_files(tmp_path):
    path = tmp_path / "not_a_checkpoint.pth"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(torch_checkpoint.CheckpointFormatError, match="not a PyTorch checkpoint"):
        torch_checkpoint.load_state_dict(str(path))
