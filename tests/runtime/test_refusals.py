"""Networks the integer runtime cannot lower are refused with one typed line."""

from __future__ import annotations

import pytest
import torch

from spikequant.convert import convert
from spikequant.errors import ProgramError
from spikequant.registry import create_model
from spikequant.runtime.lower import lower_model


def test_calif_network_and_its_qat_ann_are_refused_with_one_line():
    # lower_model lowers QLIF networks; a Ca-LIF network has its own lowering (lower_calif)
    torch.manual_seed(0)
    ann = create_model("ann_mlp", qat=True, bits=8, hidden=[16]).eval()
    for model, words in ((ann, "not a spiking network"), (convert(ann, "calif"), "lower_calif")):
        with pytest.raises(ProgramError, match=words) as info:
            lower_model(model)
        assert "\n" not in str(info.value)


def test_a_model_without_input_metadata_is_refused():
    with pytest.raises(ProgramError, match="has no input_size"):
        lower_model(torch.nn.Sequential(torch.nn.Linear(4, 2)))
