"""The engine: backends that run a model once and hand per-layer, per-head tensors to analyzers."""

from headscope.engine.activations import LayerActivations, Needs
from headscope.engine.backend import Backend, DecodeResult, select_rows
from headscope.engine.batch import ProbeBatch, pad_sequences
from headscope.engine.intervention import HeadEdit, Intervention
from headscope.engine.loading import load_backend
from headscope.engine.recorder import LayerConsumer, Recorder
from headscope.engine.spec import Head, ModelSpec
from headscope.engine.weights import ModelWeights, weights_from_hf

__all__ = [
    "Backend",
    "DecodeResult",
    "Head",
    "HeadEdit",
    "Intervention",
    "LayerActivations",
    "LayerConsumer",
    "ModelSpec",
    "ModelWeights",
    "Needs",
    "ProbeBatch",
    "Recorder",
    "load_backend",
    "pad_sequences",
    "select_rows",
    "weights_from_hf",
]
