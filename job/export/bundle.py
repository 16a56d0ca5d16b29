"""Write a trained model's three files into a run folder: model.keras, saved_model/ and model.onnx.
One place for the job's export stage and the bench."""

from pathlib import Path

from job import contract
from job.errors import ParityError
from job.export.onnx_export import OnnxExportError, export_onnx
from job.export.savedmodel import export_savedmodel
from job.storage.layout import MODEL_KERAS, MODEL_ONNX, SAVEDMODEL_DIRS


def export_model(
    net,
    serve,
    folder: Path,
    *,
    class_names: list[str],
    run_id: str,
    preset: str,
    test_accuracy: float,
    tta_level: int,
    versions: dict,
    savedmodel_dir: str = SAVEDMODEL_DIRS["runs"],
) -> None:
    """`net`: the float32 inference copy; `serve`: its inference function (job.export.inference);
    `savedmodel_dir`: where in `folder` the SavedModel goes (job.storage.layout.SAVEDMODEL_DIRS)."""
    net.save(folder / MODEL_KERAS)
    export_savedmodel(net, serve, folder / savedmodel_dir)
    meta = contract.metadata(
        class_names, run_id=run_id, preset=preset, test_accuracy=test_accuracy, tta_level=tta_level, versions=versions
    )
    try:
        export_onnx(serve, folder / MODEL_ONNX, meta)
    except OnnxExportError as exc:
        raise ParityError(f"{exc}; nothing was published") from None
