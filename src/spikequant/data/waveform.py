"""Google Speech Commands v2 as raw 16 kHz waveforms (for M5-style 1-D convolutional nets).

Same folder and official split lists as the MFCC dataset ``gsc`` (see :mod:`.speech`)::

    <root>/speech_commands_v0.02/<word>/*.wav, validation_list.txt, testing_list.txt

Each item is read when indexed: float32 ``[1, 16000]``, the clip's samples (soundfile's scale,
[-1, 1)) zero-padded at the end or trimmed to exactly 1 s; the label is the word's index in
:data:`~spikequant.data.speech.GSC_WORDS`. Nothing is cached: a waveform costs no more to read
than a cached feature.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from .paths import data_root
from .registry import register_dataset
from .speech import CLIP_SAMPLES, GSC_FOLDER, GSC_WORDS, LAYOUT, _read_clip, split_files


class SpeechWaveforms(Dataset):
    """``(waveform [1, 16000], word index)`` per item, decoded on access."""

    def __init__(self, root: Path, files: list[str], transform=None) -> None:
        self.root = root
        self.files = files
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        name = self.files[index]
        clip = _read_clip(self.root / GSC_FOLDER / name, self.root)
        x = torch.from_numpy(clip.copy()).unsqueeze(0)
        if self.transform is not None:
            x = self.transform(x)
        return x, torch.tensor(GSC_WORDS.index(name.split("/", 1)[0]))


@register_dataset(
    "gsc_raw",
    num_classes=len(GSC_WORDS),
    input_shape=(1, CLIP_SAMPLES),
    bundled=False,
    description="Google Speech Commands v2, 35 words, raw 16 kHz waveforms padded to 1 s",
    layout=LAYOUT,
)
def load_speech_waveforms(split: str, root=None, transform=None) -> SpeechWaveforms:
    folder = data_root(root).resolve()
    return SpeechWaveforms(folder, split_files(folder, split), transform)
