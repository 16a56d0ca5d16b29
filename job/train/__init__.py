"""train: model, optimizer, input pipeline, the epoch loop with checkpoints, multi-worker training."""
