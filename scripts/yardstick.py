"""The machine yardstick the README's CPU run times are stated against: torchvision AlexNet (random weights,
fp32, eval, inference mode) at batch 8, 20 forwards after one warm-up forward, timed on the host clock.

    python scripts/yardstick.py        # prints the seconds and the load average

``pytest benchmarks`` with its defaults should finish in at most 25x this figure on a CPU machine (issue 17).
"""

from __future__ import annotations

import os
import time

import torch
import torchvision


def yardstick_seconds(forwards: int = 20, batch_size: int = 8) -> float:
    model = torchvision.models.alexnet(weights=None).eval()
    images = torch.zeros(batch_size, 3, 224, 224)
    with torch.inference_mode():
        model(images)
        started = time.perf_counter()
        for _ in range(forwards):
            model(images)
        return time.perf_counter() - started


if __name__ == "__main__":
    seconds = yardstick_seconds()
    print(f"yardstick: AlexNet batch 8 x 20 forwards: {seconds:.2f} s (25x: {25 * seconds:.0f} s); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
