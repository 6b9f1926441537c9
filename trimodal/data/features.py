"""Model-input features, shared by the `shard` stage and by anything that must featurise the same way.

image_to_array: RGB -> uint8 [S, S, 3]: shorter side resized to S (bicubic), then centre-cropped.
token_ids:      texts -> int32 ids, <s> ... </s>, cut at max_tokens (the tokenizer's own truncation).
log_mel:        mono waveform -> float32 [n_mels, frames]: |STFT|^2 (torch.stft, Hann window) through a
                Slaney mel filter bank (transformers.audio_utils), then Whisper's scaling:
                log10(clamp(mel, 1e-10)), floored at (max - 8), mapped by (x + 4) / 4 to roughly [-1, 1].
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers.audio_utils import mel_filter_bank


def image_to_array(image: Image.Image, size: int) -> np.ndarray:
    image = image.convert("RGB")
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    return np.array(image.crop((left, top, left + size, top + size)), dtype=np.uint8)  # writable: torch takes it


def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    return mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                           max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm="slaney",
                           mel_scale="slaney").astype(np.float32)


def log_mel(waveform: np.ndarray, sample_rate: int, n_mels: int, n_fft: int, hop_length: int,
            filters: np.ndarray | None = None) -> np.ndarray:
    """frames = len(waveform) // hop_length + 1 (centred STFT)."""
    if filters is None:
        filters = mel_filters(sample_rate, n_fft, n_mels)
    audio = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    frames = audio.numel() // hop_length + 1
    if audio.numel() < n_fft // 2 + 1:  # reflect padding needs a little audio: zero-extend, keep `frames`
        audio = torch.nn.functional.pad(audio, (0, n_fft // 2 + 1 - audio.numel()))
    stft = torch.stft(audio, n_fft, hop_length, window=torch.hann_window(n_fft), center=True, return_complex=True)
    power = stft[:, :frames].abs() ** 2  # [freq, frames]
    mel = torch.from_numpy(filters).T @ power
    logmel = torch.clamp(mel, min=1e-10).log10()
    logmel = torch.maximum(logmel, logmel.max() - 8.0)
    return ((logmel + 4.0) / 4.0).numpy().astype(np.float32)


def token_ids(tokenizer, texts: list[str], max_tokens: int) -> list[np.ndarray]:
    """Many texts in one tokenizer call (40k single calls took ~5 s at 10k records); unpadded, each text's ids are
    the ones a call of its own gives."""
    if not texts:
        return []
    encoded = tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"]
    return [np.asarray(ids, dtype=np.int32) for ids in encoded]
