"""How Triton and TensorFlow Serving read a model repository, encoded from their documentation, for the tests to run
over what `job runs export-serving` writes.

Triton (server docs, user_guide/model_repository.md and model_configuration.md), with the default
--model-control-mode=none and --exit-on-error=true:
- every top-level folder of the repository is a model, named by the folder; Triton loads all of them and refuses to
  start when one fails to load;
- a model folder holds config.pbtxt (a ModelConfig in protobuf text format; its `name`, when set, must equal the
  folder's; without it, auto-complete needs a default-named model file to pick the backend), and numbered version
  folders; "subdirectories that are not numerically named, or have names that start
  with zero (0) will be ignored"; the version policy picks among the rest (default: latest 1);
- in a version folder, the backend loads `default_model_filename`, else its platform's default file name:
  model.onnx (onnxruntime_onnx), model.savedmodel/ (tensorflow_savedmodel, a SavedModel folder), model.plan,
  model.graphdef, model.pt, model.py (python backend);
- with max_batch_size > 0 the dims leave the batch dimension out; every input and output needs a name, a data type
  and dims; a label_filename names a file in the model folder.
TensorFlow Serving (serving/model_servers, FileSystemStoragePathSource): the model base path holds numbered version
folders, each a SavedModel (saved_model.pb or saved_model.pbtxt); other entries are ignored.
"""

from pathlib import Path

DEFAULT_MODEL_FILE = {
    "onnxruntime_onnx": "model.onnx",
    "onnxruntime": "model.onnx",
    "tensorflow_savedmodel": "model.savedmodel",
    "tensorflow_graphdef": "model.graphdef",
    "tensorrt_plan": "model.plan",
    "tensorrt": "model.plan",
    "pytorch_libtorch": "model.pt",
    "pytorch": "model.pt",
    "python": "model.py",
}


def triton_versions(model_dir: Path) -> list[int]:
    """The version folders Triton considers (numeric names not starting with 0)."""
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and p.name[0] != "0")


def triton_model_problems(model_dir: Path, config: dict) -> list[str]:
    """Why Triton would not load this model folder, given its config.pbtxt parsed with Triton's ModelConfig
    protobuf (as a JSON dict with proto field names); empty: it loads."""
    found = []
    name = model_dir.name
    if config.get("name") and config["name"] != name:
        found.append(f"{name}: config name {config['name']!r} is not the folder's")
    platform = config.get("platform") or config.get("backend")
    if not platform:
        found.append(f"{name}: neither platform nor backend set")
    filename = config.get("default_model_filename") or DEFAULT_MODEL_FILE.get(platform or "")
    if filename is None:
        found.append(f"{name}: no default model file known for {platform!r}")
    versions = triton_versions(model_dir)
    if not versions:
        found.append(f"{name}: no numbered version folder")
    policy = config.get("version_policy") or {"latest": {"num_versions": 1}}
    if "latest" in policy:
        served = versions[-int(policy["latest"].get("num_versions", 1)) :]
    elif "specific" in policy:
        served = [int(v) for v in policy["specific"].get("versions", [])]
    else:
        served = versions
    for version in served:
        path = model_dir / str(version) / (filename or "")
        if platform == "tensorflow_savedmodel":
            if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
                found.append(f"{name}: version {version} has no {filename}/saved_model.pb")
        elif filename and not path.is_file():
            found.append(f"{name}: version {version} has no {filename}")
    batched = int(config.get("max_batch_size", 0)) > 0
    for kind in ("input", "output"):
        entries = config.get(kind, [])  # may be empty: Triton completes ONNX and SavedModel configs from the model
        names = [e.get("name") for e in entries]
        if len(set(names)) != len(names) or not all(names):
            found.append(f"{name}: {kind} names missing or repeated")
        for entry in entries:
            if entry.get("data_type", "TYPE_INVALID") == "TYPE_INVALID":
                found.append(f"{name}: {kind} {entry.get('name')} has no data type")
            if not entry.get("dims") and not batched:
                found.append(f"{name}: {kind} {entry.get('name')} has no dims")
            label = entry.get("label_filename")
            if label and not (model_dir / label).is_file():
                found.append(f"{name}: label file {label} missing")
    return found


def triton_repository_problems(repo: Path, parse) -> list[str]:
    """Why Triton would refuse to start on `repo` (every top-level folder must load); `parse(path)` reads a
    config.pbtxt with Triton's ModelConfig protobuf."""
    if not repo.is_dir():
        return [f"{repo} is not a folder"]
    found = []
    models = sorted(p for p in repo.iterdir() if p.is_dir())
    if not models:
        found.append(f"{repo}: no model folder")
    for model_dir in models:
        config_file = model_dir / "config.pbtxt"
        if config_file.is_file():
            found += triton_model_problems(model_dir, parse(config_file))
            continue
        # No config: auto-complete picks the backend from a default-named model file in a version folder.
        versions = triton_versions(model_dir)
        latest = model_dir / str(versions[-1]) if versions else None
        known = [p for p, f in DEFAULT_MODEL_FILE.items() if latest and (latest / f).exists()]
        if not known:
            found.append(f"{model_dir.name}: no config.pbtxt and no model file Triton recognises")
        else:
            found += triton_model_problems(model_dir, {"platform": known[0]})
    return found


def tf_serving_problems(base_path: Path) -> list[str]:
    """Why TensorFlow Serving would serve nothing from this model base path."""
    if not base_path.is_dir():
        return [f"{base_path} is not a folder"]
    versions = [p for p in base_path.iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        return [f"{base_path}: no numbered version folder"]
    return [
        f"{v}: no saved_model.pb"
        for v in versions
        if not (v / "saved_model.pb").is_file() and not (v / "saved_model.pbtxt").is_file()
    ]
