"""Full MNIST (IDX), ImageNet / Tiny-ImageNet / Caltech-101 (image files), IMDB (aclImdb) and raw
GSC waveforms, each read from a small fixture written in the real on-disk format."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from torch.utils.data import DataLoader

from spikequant.data import dataset_info, get_dataset, load_arrays
from spikequant.data.speech import GSC_FOLDER, GSC_WORDS
from spikequant.data.text import imdb_vocabulary, regex_tokenize
from spikequant.errors import DatasetNotFoundError

# ---------------------------------------------------------------- MNIST (IDX)


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    blob = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)


def make_mnist(root: Path, n_train=20, n_test=7, compress=True):
    rng = np.random.default_rng(0)
    base = root / "mnist"
    base.mkdir(parents=True)
    data = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(base / f"{part}-images-idx3-ubyte", images, compress)
        write_idx(base / f"{part}-labels-idx1-ubyte", labels, compress)
        data[part] = (images, labels)
    return data


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_roundtrip(tmp_path, compress):
    data = make_mnist(tmp_path, compress=compress)
    ds = get_dataset("mnist", "train", root=tmp_path)
    assert len(ds) == 20
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    images, labels = data["train"]
    assert torch.equal(x[0], torch.from_numpy(images[3].astype(np.float32) / 255.0))
    assert int(y) == int(labels[3])
    X, Y = load_arrays("mnist", "test", root=tmp_path)
    assert X.shape == (7, 1, 28, 28)
    assert Y.tolist() == data["t10k"][1].tolist()
    assert len(get_dataset("mnist", "val", root=tmp_path)) == 2
    assert dataset_info("mnist").input_shape == (1, 28, 28)


def test_mnist_missing_and_damaged(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        get_dataset("mnist", "train", root=tmp_path)
    assert "\n" not in str(info.value) and "t10k-labels-idx1-ubyte" in str(info.value)
    make_mnist(tmp_path)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing t10k-labels-idx1-ubyte"):
        get_dataset("mnist", "train", root=tmp_path)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", np.zeros(6, np.uint8), False)
    with pytest.raises(DatasetNotFoundError, match="6 labels for 7 images"):
        get_dataset("mnist", "test", root=tmp_path)
    truncated = b"\x00\x00\x08\x01\x00\x00\x00\x09ab"  # says 9 labels, holds 2
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(truncated)
    with pytest.raises(DatasetNotFoundError, match="damaged"):
        get_dataset("mnist", "test", root=tmp_path)


# ---------------------------------------------------------------- image folders


def _save_image(path: Path, seed: int, size=(80, 60), fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, format=fmt)
    return rgb


def test_imagenet_class_folders(tmp_path):
    base = tmp_path / "imagenet"
    wnids = ["n01440764", "n01443537", "n01484850"]
    for c, wnid in enumerate(wnids):
        for i in range(10):
            _save_image(base / "train" / wnid / f"{wnid}_{i}.JPEG", 10 * c + i)
        _save_image(base / "val" / wnid / f"ILSVRC2012_val_{c:08d}.JPEG", 100 + c, size=(300, 260))
    train = get_dataset("imagenet", "train", root=tmp_path)
    assert len(train) == 30 and train.classes == wnids
    x, y = train[12]
    assert x.shape == (3, 224, 224) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert int(y) == 1
    test = get_dataset("imagenet", "test", root=tmp_path)
    assert [int(test[i][1]) for i in range(3)] == [0, 1, 2]
    val = get_dataset("imagenet", "val", root=tmp_path)
    assert [int(val[i][1]) for i in range(len(val))] == [0, 1, 2]  # every tenth file
    assert dataset_info("imagenet").num_classes == 1000
    # a lazily decoded dataset works with a DataLoader
    xb, yb = next(iter(DataLoader(test, batch_size=3)))
    assert xb.shape == (3, 3, 224, 224) and yb.tolist() == [0, 1, 2]
    normed = get_dataset("imagenet", "test", root=tmp_path, normalize=True)
    assert float(normed[0][0].min()) < 0


def test_image_decode_matches_pil_resize_and_centre_crop(tmp_path):
    path = tmp_path / "caltech101" / "101_ObjectCategories" / "ant" / "image_0001.png"
    _save_image(path, 5, size=(40, 20), fmt="PNG")
    _save_image(path.with_name("image_0002.png"), 6, size=(40, 20), fmt="PNG")
    ds = get_dataset("caltech101", "train", root=tmp_path, size=8, resize=10)
    x, _ = ds[0]
    with Image.open(ds.samples[0][0]) as img:
        expected = np.asarray(img.convert("RGB").resize((20, 10), Image.BILINEAR))[1:9, 6:14]
    assert torch.equal(x, torch.from_numpy(expected.copy()).permute(2, 0, 1).float() / 255.0)


def test_tiny_imagenet_val_annotations(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n02124075", "n01443537"]
    base.mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid in wnids:
        for i in range(3):
            _save_image(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", i, size=(64, 64))
    rgb = _save_image(base / "val" / "images" / "val_0.JPEG", 7, size=(64, 64), fmt="PNG")
    _save_image(base / "val" / "images" / "val_1.JPEG", 8, size=(64, 64))
    (base / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn02124075\t0\t0\t63\t63\nval_1.JPEG\tn01443537\t1\t2\t50\t60\n"
    )
    (base / "test" / "images").mkdir(parents=True)
    train = get_dataset("tiny_imagenet", "train", root=tmp_path)
    assert len(train) == 6 and train.classes == sorted(wnids)
    assert [int(train[i][1]) for i in range(6)] == [0, 0, 0, 1, 1, 1]
    test = get_dataset("tiny_imagenet", "test", root=tmp_path)
    x0, y0 = test[0]
    assert x0.shape == (3, 64, 64) and int(y0) == 1  # n02124075 sorts after n01443537
    assert torch.equal(x0, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0)  # lossless PNG
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(DatasetNotFoundError, match="line 1"):
        get_dataset("tiny_imagenet", "test", root=tmp_path)


def test_caltech101_split_is_disjoint_and_skips_background(tmp_path):
    base = tmp_path / "caltech101" / "101_ObjectCategories"
    for c, name in enumerate(["Faces", "accordion", "BACKGROUND_Google"]):
        for i in range(6):
            _save_image(base / name / f"image_{i + 1:04d}.jpg", 10 * c + i, size=(30, 40))
    train = get_dataset("caltech101", "train", root=tmp_path, size=32, resize=32)
    test = get_dataset("caltech101", "test", root=tmp_path, size=32, resize=32)
    assert train.classes == ["Faces", "accordion"]
    assert len(test) == 4 and len(train) == 8  # ceil(0.2 * 6) = 2 test images per class
    assert not {p for p, _ in train.samples} & {p for p, _ in test.samples}
    assert train[0][0].shape == (3, 32, 32)
    assert dataset_info("caltech101").num_classes == 101


@pytest.mark.parametrize("name", ["imagenet", "tiny_imagenet", "caltech101"])
def test_missing_image_dataset_is_one_line(tmp_path, name):
    with pytest.raises(DatasetNotFoundError) as info:
        get_dataset(name, "train", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message
    assert dataset_info(name).layout in message


def test_damaged_image_is_dataset_error(tmp_path):
    path = tmp_path / "caltech101" / "101_ObjectCategories" / "ant" / "image_0001.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetNotFoundError, match="cannot decode"):
        get_dataset("caltech101", "test", root=tmp_path)[0]


# ---------------------------------------------------------------- IMDB

REVIEWS = {
    "train/pos/0_9.txt": "A great movie!<br /><br />Great acting, great story.",
    "train/pos/1_8.txt": "I loved it. Don't miss it!",
    "train/neg/0_2.txt": "Terrible. A boring, boring movie?",
    "train/neg/1_1.txt": "I hated the acting.",
    "test/pos/0_10.txt": "Great fun, loved the story",
    "test/neg/0_3.txt": "boring zzzunseen words",
}


def make_imdb(root: Path):
    for rel, text in REVIEWS.items():
        path = root / "aclImdb" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "aclImdb" / "train" / "unsup").mkdir()
    (root / "aclImdb" / "train" / "unsup" / "0_0.txt").write_text("unsup unsup unsup unsup")


def test_regex_tokenizer():
    assert regex_tokenize("Don't<br />STOP!  It's 10/10?") == [
        "don't", "stop", "!", "it's", "10", "10", "?"
    ]  # fmt: skip


def test_imdb_regex_vocabulary_and_ids(tmp_path):
    make_imdb(tmp_path)
    vocab = imdb_vocabulary(tmp_path, tokenizer="regex", vocab_size=7)
    # <pad>, <unk>, then by train count: great 3, then the 2s (! a acting boring i it movie)
    # in token order
    assert vocab.tokens == ["<pad>", "<unk>", "great", "!", "a", "acting", "boring"]
    ds = get_dataset("imdb", "test", root=tmp_path, tokenizer="regex", vocab_size=7, max_len=4)
    assert len(ds) == 2
    x, y = ds[0]  # test/neg first: "boring zzzunseen words" -> boring unk unk, left-padded
    assert x.tolist() == [0, 6, 1, 1] and int(y) == 0
    x, y = ds[1]  # "great fun loved the story": last 4 tokens kept
    assert x.tolist() == [1, 1, 1, 1] and int(y) == 1
    train = get_dataset("imdb", "train", root=tmp_path, tokenizer="regex", max_len=8)
    assert [int(train[i][1]) for i in range(4)] == [0, 0, 1, 1]  # unsup/ is never read
    assert "unsup" not in train.vocab.index


def test_imdb_tokenizers_library(tmp_path):
    make_imdb(tmp_path)
    ds = get_dataset("imdb", "train", root=tmp_path, tokenizer="tokenizers", max_len=6)
    vocab = ds.vocab
    assert vocab.index["<pad>"] == 0 and vocab.index["<unk>"] == 1 and "great" in vocab.index
    x, _ = ds[3]  # train/pos/1_8: "I loved it. Don't miss it!" (ends with "!")
    assert x.shape == (6,) and x.dtype == torch.long and int(x[-1]) == vocab.index["!"]
    # the cached vocabulary reads back identically
    again = imdb_vocabulary(tmp_path, tokenizer="tokenizers")
    assert again.tokens == vocab.tokens


def test_imdb_missing_is_one_line(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        get_dataset("imdb", "train", root=tmp_path, tokenizer="regex")
    assert "\n" not in str(info.value) and "aclImdb" in str(info.value)


# ---------------------------------------------------------------- GSC waveforms


def test_gsc_raw_waveforms(tmp_path):
    base = tmp_path / GSC_FOLDER
    rng = np.random.default_rng(0)
    clips = {
        "yes/a_nohash_0.wav": 0.3 * rng.standard_normal(12000),  # short: zero-padded
        "no/b_nohash_0.wav": 0.3 * rng.standard_normal(17000),  # long: trimmed
        "up/c_nohash_0.wav": 0.3 * rng.standard_normal(16000),
    }
    for rel, samples in clips.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(base / rel, np.clip(samples, -1, 0.99).astype(np.float32), 16000,
                        subtype="PCM_16")  # fmt: skip
    (base / "validation_list.txt").write_text("up/c_nohash_0.wav\n")
    (base / "testing_list.txt").write_text("no/b_nohash_0.wav\n")
    train = get_dataset("gsc_raw", "train", root=tmp_path)
    assert len(train) == 1
    x, y = train[0]
    assert x.shape == (1, 16000) and int(y) == GSC_WORDS.index("yes")
    stored, _ = soundfile.read(base / "yes/a_nohash_0.wav", dtype="float32")
    assert torch.equal(x[0, :12000], torch.from_numpy(stored)) and not x[0, 12000:].any()
    x, y = get_dataset("gsc_raw", "test", root=tmp_path)[0]
    assert x.shape == (1, 16000) and int(y) == GSC_WORDS.index("no")
    assert dataset_info("gsc_raw").input_shape == (1, 16000)
    with pytest.raises(DatasetNotFoundError, match="validation_list.txt"):
        get_dataset("gsc_raw", "train", root=tmp_path / "none")


def test_missing_optional_packages_are_one_line(tmp_path, monkeypatch):
    make_imdb(tmp_path)
    (tmp_path / "caltech101" / "101_ObjectCategories" / "ant").mkdir(parents=True)
    monkeypatch.setitem(__import__("sys").modules, "PIL", None)
    monkeypatch.setitem(__import__("sys").modules, "tokenizers", None)
    with pytest.raises(
        DatasetNotFoundError, match=r"needs Pillow: pip install 'spikequant\[images\]'"
    ):
        get_dataset("caltech101", "train", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"pip install 'spikequant\[text\]'"):
        get_dataset("imdb", "train", root=tmp_path, tokenizer="tokenizers")
    # "auto" falls back to the documented regex tokenizer
    assert get_dataset("imdb", "train", root=tmp_path).vocab.kind == "regex"
