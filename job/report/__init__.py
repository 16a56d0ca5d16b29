"""report: test metrics, plots, history and the model card of a run; its provenance and MLflow record; and its way
out (release: the last files, the one-line summary, the all-or-nothing publish)."""
