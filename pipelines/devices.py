"""Distribution strategy and numeric precision, chosen from the devices present.

Follows the TensorFlow distributed-training and mixed-precision guides:
* TF_CONFIG set (a multi-worker cluster): MultiWorkerMirroredStrategy;
* several GPUs: MirroredStrategy (one replica per GPU, all-reduce);
* one GPU: OneDeviceStrategy on it; otherwise the default (CPU) strategy.
Precision "auto" is mixed_float16 on GPUs (Tensor Cores) and float32 on CPUs
(mixed_bfloat16 was measured slower than float32 on our CPU machines). The
classifier's output layer is always float32 (see model.py).
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf
from absl import logging

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def gpus() -> list:
    return tf.config.list_physical_devices("GPU")


def select_strategy(cluster: bool = True) -> tf.distribute.Strategy:
    """The strategy for the devices (and, if `cluster`, the TF_CONFIG cluster) this
    process sees. `cluster=False`: this node's devices only."""
    if cluster and os.environ.get("TF_CONFIG"):
        cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
        logging.info("TF_CONFIG cluster %s: MultiWorkerMirroredStrategy", cluster)
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = gpus()
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy()
    if len(devices) == 1:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()


def resolve_precision(precision: str = "auto") -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "mixed_float16" if gpus() else "float32"
    return precision


def set_precision(precision: str = "auto") -> str:
    """Sets the global Keras dtype policy; returns the policy name used."""
    policy = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(policy)
    return policy


# Images per GPU at 224 px that keep a large (40-80 GB) card busy with
# EfficientNet-B0 in mixed precision; smaller inputs take proportionally more.
GPU_TRAIN_IMAGES_AT_224 = 256
GPU_INFERENCE_IMAGES_AT_224 = 512
CPU_TRAIN_BATCH = 32
CPU_INFERENCE_BATCH = 64


def auto_batch_size(image_size: int, replicas: int, training: bool) -> int:
    """A global batch size for the devices present (used when --batch_size=0)."""
    if not gpus():
        return CPU_TRAIN_BATCH if training else CPU_INFERENCE_BATCH
    per_gpu = GPU_TRAIN_IMAGES_AT_224 if training else GPU_INFERENCE_IMAGES_AT_224
    per_gpu = int(per_gpu * (224 / image_size) ** 2)
    return max(8, min(per_gpu, 4096)) * replicas


def describe() -> str:
    """One line on what this process will run on, for logs and metrics files."""
    devices = gpus()
    where = f"{len(devices)} GPU(s)" if devices else f"CPU ({os.cpu_count()} cores)"
    return f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {where}"
