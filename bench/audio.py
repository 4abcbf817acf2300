"""Synthetic speech-like audio for the load generator."""

from __future__ import annotations

import numpy as np


def speech_like(ms: int) -> bytes:
    t = np.arange(ms * 24) / 24000
    signal_ = 0.2 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (signal_ * 32767).astype("<i2").tobytes()
