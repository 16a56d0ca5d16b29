"""report: test metrics, plots, history and the model card of a run."""
