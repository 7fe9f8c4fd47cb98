"""IMDB movie-review sentiment (Maas et al., 2011) from the ``aclImdb`` folder, as token ids.

Expected layout (``aclImdb_v1.tar.gz`` extracted; ``unsup/`` and ``.feat`` files are not read)::

    <root>/aclImdb/train/pos/*.txt  <root>/aclImdb/train/neg/*.txt   (12,500 each)
    <root>/aclImdb/test/pos/*.txt   <root>/aclImdb/test/neg/*.txt

Labels: ``neg`` = 0, ``pos`` = 1. ``val`` is every tenth review of the sorted training list.

Tokenizer (``tokenizer=``):

* ``"regex"``: lower-case, ``<br />`` -> space, then
  ``re.findall(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")``: words with an optional apostrophe suffix
  such as ``don't``; ``!`` and ``?`` are kept as tokens.
* ``"tokenizers"``: Hugging Face ``tokenizers`` (the ``text`` extra): NFKC + lower-case
  normaliser, ``<br />`` -> space, ``Whitespace`` pre-tokeniser (``\\w+|[^\\w\\s]+``) and a
  ``WordLevel`` model trained on the train split.
* ``"auto"`` (default): ``tokenizers`` when installed, else ``regex``.

Vocabulary: built on the train split only: id 0 = ``<pad>``, 1 = ``<unk>``, then the
``vocab_size - 2`` most frequent tokens (ties by token, so the vocabulary is deterministic for the
regex tokenizer). It is cached as JSON in ``<root>/.spikequant_cache/imdb-vocab-<hash>.json``.
Each review becomes int64 ``[max_len]``: ids of its last ``max_len`` tokens, left-padded with 0
(so a recurrent net reads the review's end last). Files are read and tokenised per item.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DatasetNotFoundError
from ..io import atomic_write_bytes
from .paths import CACHE_DIRNAME, data_root, params_key
from .registry import register_dataset

IMDB_FOLDER = "aclImdb"
LAYOUT = f"<root>/{IMDB_FOLDER}/{{train,test}}/{{pos,neg}}/*.txt"
LABELS = ("neg", "pos")
PAD, UNK = "<pad>", "<unk>"
DEFAULT_VOCAB = 20000
DEFAULT_MAX_LEN = 256
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def _not_found(root: Path, problem: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"IMDB {problem}; expected under {root}: {LAYOUT} "
        f"(extract aclImdb_v1.tar.gz there, or set root= or $SPIKEQUANT_DATA)"
    )


def regex_tokenize(text: str) -> list[str]:
    """Lower-case words (with an optional ``'suffix``) plus ``!`` and ``?``; ``<br />`` splits."""
    return _TOKEN.findall(_BREAK.sub(" ", text).lower())


def review_files(root: Path, split: str) -> list[tuple[Path, int]]:
    base = root / IMDB_FOLDER
    part = "test" if split == "test" else "train"
    folders = [base / part / label for label in LABELS]
    missing = [str(f.relative_to(root)) for f in folders if not f.is_dir()]
    if missing:
        raise _not_found(root, f"folder {missing[0]} does not exist")
    files = [(path, label) for label, f in enumerate(folders) for path in sorted(f.glob("*.txt"))]
    if split == "val":
        files = files[9::10]
    if not files:
        raise _not_found(root, f"the {split} split holds no reviews")
    return files


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _resolve_tokenizer(name: str) -> str:
    if name not in ("auto", "regex", "tokenizers"):
        raise ConfigError(f"tokenizer must be 'auto', 'regex' or 'tokenizers', got {name!r}")
    if name == "regex":
        return name
    try:
        import tokenizers  # noqa: F401
    except ModuleNotFoundError:
        if name == "tokenizers":
            raise DatasetNotFoundError(
                "the 'tokenizers' tokenizer needs Hugging Face tokenizers: "
                "pip install 'spikequant[text]' (or use tokenizer='regex')"
            ) from None
        return "regex"
    return "tokenizers"


def _hf_tokenizer():
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"<br\s*/?>"), " "), normalizers.NFKC(), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


class Vocabulary:
    """token -> id with ``<pad>`` = 0, ``<unk>`` = 1; ``encode`` maps a text to ids."""

    def __init__(self, kind: str, payload: str | list[str]) -> None:
        self.kind = kind
        if kind == "regex":
            self.tokens = list(payload)
            self.index = {tok: i for i, tok in enumerate(self.tokens)}
        else:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_str(payload)
            vocab = self.tokenizer.get_vocab()
            self.tokens = sorted(vocab, key=vocab.__getitem__)
            self.index = vocab

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        if self.kind == "regex":
            unk = self.index[UNK]
            return [self.index.get(tok, unk) for tok in regex_tokenize(text)]
        return self.tokenizer.encode(text).ids

    def to_json(self) -> str:
        payload = self.tokens if self.kind == "regex" else self.tokenizer.to_str()
        return json.dumps({"kind": self.kind, "payload": payload})

    @classmethod
    def from_json(cls, blob: str) -> Vocabulary:
        data = json.loads(blob)
        return cls(data["kind"], data["payload"])


def build_vocabulary(files: list[Path], kind: str, vocab_size: int) -> Vocabulary:
    """The ``vocab_size`` entries (``<pad>``, ``<unk>`` and the most frequent train tokens)."""
    if kind == "regex":
        counts: Counter[str] = Counter()
        for path in files:
            counts.update(regex_tokenize(_read(path)))
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return Vocabulary("regex", [PAD, UNK] + [tok for tok, _ in ranked[: vocab_size - 2]])
    from tokenizers import trainers

    tok = _hf_tokenizer()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, UNK], show_progress=False
    )
    tok.train([str(p) for p in files], trainer)
    return Vocabulary("tokenizers", tok.to_str())


def imdb_vocabulary(root=None, tokenizer: str = "auto", vocab_size: int = DEFAULT_VOCAB):
    """The train-split vocabulary, read from the cache or built (and cached) on first use."""
    if vocab_size < 3:
        raise ConfigError(f"vocab_size must be >= 3, got {vocab_size}")
    folder = data_root(root).resolve()
    kind = _resolve_tokenizer(tokenizer)
    files = [path for path, _ in review_files(folder, "train")]
    key = {"kind": kind, "vocab_size": vocab_size, "files": len(files),
           "bytes": sum(p.stat().st_size for p in files)}  # fmt: skip
    path = folder / CACHE_DIRNAME / f"imdb-vocab-{params_key(key)}.json"
    if path.is_file():
        try:
            return Vocabulary.from_json(path.read_text())
        except Exception:  # a damaged cache (any parse error) is rebuilt
            pass
    vocab = build_vocabulary(files, kind, vocab_size)
    try:
        atomic_write_bytes(path, vocab.to_json().encode())
    except OSError:
        pass  # read-only data folder: rebuild next time
    return vocab


class IMDBDataset(Dataset):
    """Reviews read and tokenised per item: ``(ids int64 [max_len], label)``."""

    def __init__(self, files: list[tuple[Path, int]], vocab: Vocabulary, max_len: int) -> None:
        if max_len < 1:
            raise ConfigError(f"max_len must be >= 1, got {max_len}")
        self.files = files
        self.vocab = vocab
        self.max_len = int(max_len)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path, label = self.files[index]
        ids = self.vocab.encode(_read(path))[-self.max_len :]
        x = torch.zeros(self.max_len, dtype=torch.long)
        if ids:
            x[-len(ids) :] = torch.tensor(ids, dtype=torch.long)
        return x, torch.tensor(label)


@register_dataset(
    "imdb",
    num_classes=2,
    input_shape=(DEFAULT_MAX_LEN,),
    bundled=False,
    description="IMDB reviews (25,000 train / 25,000 test) as token ids, vocabulary from train",
    layout=LAYOUT,
)
def load_imdb(
    split: str,
    root=None,
    tokenizer: str = "auto",
    vocab_size: int = DEFAULT_VOCAB,
    max_len: int = DEFAULT_MAX_LEN,
) -> IMDBDataset:
    folder = data_root(root).resolve()
    files = review_files(folder, split)
    vocab = imdb_vocabulary(folder, tokenizer, vocab_size)
    return IMDBDataset(files, vocab, max_len)
