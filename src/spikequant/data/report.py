"""Measure the data front ends and write ``data_frontends.{json,md}`` (into ``--out``, default
``spikequant-reports/``).

Run: ``python -m spikequant.data.report [--out DIR]``. It needs no dataset: it feeds the real
front-end code synthetic input (a 1 s noise clip for the MFCCs, a DVS128-sized random event
stream for the frames, a random CIFAR-sized batch for augmentation) and records

* the GSC MFCC matrix shape of the documented front end, and what librosa's ``center=True``
  variants would give (the paper states 48 x 10);
* MFCC cost per clip, event binning cost per recording and the cached size per sample;
* augmentation cost per CIFAR batch.

Timings are medians of a few repeats on this machine (shared CPUs: read them as rough costs).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from ..io import DEFAULT_REPORTS, command_header, command_line, results_dir, write_json, write_text


def _median_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up (numba JIT in librosa, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_gsc() -> dict:
    from .._optional import require
    from .speech import CLIP_SAMPLES, FRONT_END, NUM_FRAMES, mfcc_features

    librosa = require("librosa", "the dataset report")
    rng = np.random.default_rng(0)
    clips = (0.1 * rng.standard_normal((64, CLIP_SAMPLES))).astype(np.float32)
    features = mfcc_features(clips[:1])
    common = dict(
        sr=FRONT_END["sr"],
        n_mfcc=FRONT_END["n_mfcc"],
        n_fft=FRONT_END["n_fft"],
        win_length=FRONT_END["win_length"],
        hop_length=FRONT_END["hop_length"],
    )
    padded = np.pad(clips[0], FRONT_END["padding"])
    center_padded = librosa.feature.mfcc(y=padded, center=True, **common).shape[::-1]
    center_raw = librosa.feature.mfcc(y=clips[0], center=True, **common).shape[::-1]
    per_clip = _median_seconds(lambda: mfcc_features(clips), repeats=3) / len(clips)
    return {
        "front_end": FRONT_END,
        "frames_x_coefficients": list(features.shape[1:]),
        "formula": "1 + floor((16000 + 2*320 - 1024) / 320)",
        "formula_value": NUM_FRAMES,
        "paper_states": [48, 10],
        "librosa_center_true_with_padding": list(center_padded),
        "librosa_center_true_without_padding": list(center_raw),
        "mfcc_ms_per_clip": round(per_clip * 1e3, 3),
        "estimated_minutes_for_105829_clips_mfcc_only": round(per_clip * 105829 / 60, 1),
    }


def measure_events(timesteps: int = 10, n_events: int = 200_000) -> dict:
    from .events import EVENT_DTYPE, FRAME_SIZE, events_to_frames

    rng = np.random.default_rng(0)
    events = np.empty(n_events, dtype=EVENT_DTYPE)
    events["x"] = rng.integers(0, 128, n_events)
    events["y"] = rng.integers(0, 128, n_events)
    events["t"] = np.sort(rng.integers(0, 1_300_000, n_events))
    events["p"] = rng.integers(0, 2, n_events)
    frames = events_to_frames(events, (128, 128), timesteps)
    seconds = _median_seconds(lambda: events_to_frames(events, (128, 128), timesteps), repeats=3)
    packed = np.packbits(frames.astype(bool)).nbytes
    return {
        "timesteps": timesteps,
        "frame_shape": list(frames.shape),
        "events_per_recording": n_events,
        "ms_per_recording": round(seconds * 1e3, 2),
        "cached_bytes_per_sample": int(packed),
        "float32_bytes_per_sample": int(frames.nbytes),
        "frame_size": FRAME_SIZE,
    }


def measure_augment(batch: int = 128) -> dict:
    from .augment import mixup, random_crop, random_horizontal_flip, random_resized_crop

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    ops = {
        "random_crop_pad4": lambda: random_crop(x, padding=4, generator=gen),
        "random_resized_crop": lambda: random_resized_crop(x, generator=gen),
        "horizontal_flip": lambda: random_horizontal_flip(x, generator=gen),
        "mixup_alpha1": lambda: mixup(x, y, 1.0, generator=gen),
    }
    return {
        "batch_shape": list(x.shape),
        "ms_per_batch": {k: round(_median_seconds(f) * 1e3, 3) for k, f in ops.items()},
    }


def _markdown(report: dict) -> str:
    gsc, ev, aug = report["gsc"], report["events"], report["augment"]
    lines = [
        "# Data front ends (measured by `python -m spikequant.data.report`)",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| GSC MFCC matrix (frames x coefficients) | {gsc['frames_x_coefficients']} |",
        f"| formula {gsc['formula']} | {gsc['formula_value']} |",
        f"| paper states | {gsc['paper_states']} |",
        f"| librosa center=True on top of the padding | "
        f"{gsc['librosa_center_true_with_padding']} |",
        f"| librosa center=True, no explicit padding | "
        f"{gsc['librosa_center_true_without_padding']} |",
        f"| MFCC cost per clip | {gsc['mfcc_ms_per_clip']} ms |",
        f"| event frames per sample | {ev['frame_shape']} |",
        f"| binning one {ev['events_per_recording']}-event recording | "
        f"{ev['ms_per_recording']} ms |",
        f"| cached bytes per event sample (bit-packed) | {ev['cached_bytes_per_sample']} |",
    ]
    for name, ms in aug["ms_per_batch"].items():
        lines.append(f"| {name} on {aug['batch_shape']} | {ms} ms |")
    lines += ["", f"Machine: {report['machine']}, torch {report['torch']}.", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default spikequant-reports)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = {
        "gsc": measure_gsc(),
        "events": measure_events(),
        "augment": measure_augment(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "threads": 1,
    }
    out = results_dir(args.out, DEFAULT_REPORTS)
    write_json(out / "data_frontends.json", {"command": command_line(), **report})
    write_text(out / "data_frontends.md", command_header() + _markdown(report))
    print(_markdown(report))
    return report


if __name__ == "__main__":
    main()
