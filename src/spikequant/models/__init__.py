"""Model zoo. Importing this package registers every model with :mod:`spikequant.registry`.

All models take ``num_classes``, ``in_channels``, ``input_size``, ``timesteps``, ``neuron`` (a
registered neuron name or ``"relu"`` for the ANN baseline, which runs with T = 1) and
``neuron_kwargs``; they accept ``[B, C, H, W]`` (repeated over T) or ``[T, B, C, H, W]`` and return
per-timestep logits ``[T, B, num_classes]``.
"""

from . import audio, mobilenet, recurrent, resnet, small, spikformer, vgg  # noqa: F401  (registration)
from .audio import M5
from .common import ANN_NEURON, NeuronFactory, SpikingModel, static_form
from .mobilenet import MobileNet
from .recurrent import RecurrentSNN
from .resnet import BasicBlock, ResNet
from .small import MLP, DigitsCNN
from .spikformer import Spikformer
from .vgg import VGG

__all__ = [
    "ANN_NEURON",
    "M5",
    "MLP",
    "MobileNet",
    "BasicBlock",
    "DigitsCNN",
    "NeuronFactory",
    "RecurrentSNN",
    "ResNet",
    "SpikingModel",
    "Spikformer",
    "VGG",
    "static_form",
]
