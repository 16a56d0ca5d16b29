"""Test-time augmentation of a published run, measured on the validation split (where choices are made) and on
the test holdout (reported, never used to choose): none, mirror, mirror + 1-pixel translations.

    python -m bench.tta RUN_DIR [--out tta.json]
"""

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from job import config, stages
    from job.export.inference import inference_function, predict

    saved = json.loads((args.run_dir / "config.json").read_text())
    cfg = config.resolve({k: v for k, v in saved.items() if k not in ("sources", "run_id")}, env={})
    splits = stages.data(cfg.dataset, cfg.publishing.s3)
    net = keras.models.load_model(args.run_dir / "model.keras")
    result = {"run": str(args.run_dir), "val_images": len(splits.y_val), "test_images": len(splits.y_test), "modes": {}}
    for level, name in enumerate(("none", "mirror", "mirror+translate")):
        serve = inference_function(net, level)
        t0 = time.perf_counter()
        test = float(np.mean(predict(serve, splits.x_test).argmax(1) == splits.y_test))
        seconds = time.perf_counter() - t0
        mode = {"test_accuracy": round(test, 4), "test_images_per_second": round(len(splits.y_test) / seconds, 1)}
        if len(splits.y_val):  # none in a run trained with --val-fraction 0
            mode["val_accuracy"] = round(float(np.mean(predict(serve, splits.x_val).argmax(1) == splits.y_val)), 4)
        result["modes"][name] = mode
        print(name, result["modes"][name], flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
