#!/usr/bin/env python3
"""Data loading benchmark: RecordIO read throughput and a full DataLoader (decode + flip) at 0/1/2 workers.

Writes a RecordIO pack of procedural faces (JPEG, as MS1MV2 packs hold), then measures records/s and MB/s of the
pure-Python reader, and images/s of a DataLoader over it, against the distillation throughput measured by
benchmarks/run.py: data loading must not be what limits training. Writes benchmarks/results/data.json.

Usage: python benchmarks/data.py [--images 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from run import cpu_name, save_results

from factory.data.formats.recordio import RecordIOReader, write_insightface_pack
from factory.data.mixing import RecordIODataset
from factory.data.world.renderer import ProceduralFaceWorld
from factory.data.world.splits import unlabelled_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = ProceduralFaceWorld(seed=0)
    encoded = []
    for step in range((args.images + 255) // 256):
        for img in unlabelled_batch(world, 256, step, 0)["images"].numpy():
            buf = io.BytesIO()
            Image.fromarray(img.transpose(1, 2, 0)).save(buf, format="JPEG", quality=95)
            encoded.append(buf.getvalue())
    encoded = encoded[: args.images]
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rec = write_insightface_pack(Path(tmp) / "train.rec", encoded, [i // 10 for i in range(len(encoded))])
        megabytes = rec.stat().st_size / 1e6
        with RecordIOReader(rec) as reader:
            start = time.perf_counter()
            for key in reader.image_keys:
                reader.read_payload(key)
            seconds = time.perf_counter() - start
        results["recordio_records_per_s"] = len(encoded) / seconds
        results["recordio_mb_per_s"] = megabytes / seconds
        dataset = RecordIODataset(rec, flip=True)
        for workers in (0, 1, 2):
            loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True, num_workers=workers)
            start = time.perf_counter()
            n = sum(len(images) for images, _ in loader)
            results[f"dataloader_{workers}_workers_images_per_s"] = n / (time.perf_counter() - start)
    throughput = Path(__file__).parent / "results" / "throughput.json"
    if throughput.is_file():
        training = json.loads(throughput.read_text())["results"]
        for student in ("tinyfar_a", "tinyfar_c"):
            results[f"loader_0_workers_over_{student}_distill"] = (
                results["dataloader_0_workers_images_per_s"] / training[f"distill_{student}_images_per_s"]
            )
    record = {
        "machine": {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__},
        "pack": {"images": len(encoded), "megabytes": megabytes, "encoding": "JPEG q95, 112x112"},
        "results": results,
    }
    save_results("data", record)


if __name__ == "__main__":
    main()
