"""Model files: potforge's own format and the NeuroChem format of the published ANI models.

potforge format: one file written by ``torch.save`` holding a JSON string of hyperparameters and
metadata plus a flat dict of tensors. It is read back with ``torch.load(weights_only=True)``,
which never unpickles arbitrary objects, then checked against the hyperparameters.

NeuroChem format (``*.info``): four lines naming the AEV constants file, the self-energy file,
the ensemble prefix and the number of members; each member directory holds ``ANN-<El>.nnf``
(a ``1112=`` header then a bz2-compressed layer description) and float32 ``.wparam``/``.bparam``
files. Energies there are in Hartree and converted to eV here, once, in float64.
"""

from __future__ import annotations

import bz2
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from potforge import durable
from potforge.errors import ModelFileError
from potforge.model.aev import AEVParams
from potforge.model.ensemble import ANIEnsemble
from potforge.units import HARTREE_EV

FORMAT_NAME = "potforge-ani"
FORMAT_VERSION = 1
#: HIP-NN ensembles (:mod:`potforge.model.hipnn`): same container, their own hyperparameters
HIPNN_FORMAT_NAME = "potforge-hipnn"
HIPNN_FORMAT_VERSION = 1


def save_model(model, path: str | Path) -> Path:
    """Write ``model`` (an ANI or HIP-NN ensemble) to ``path`` (atomically: a crash never
    leaves half a file)."""
    path = Path(path)
    if getattr(model, "architecture", "ani") == "hipnn":
        hyper = {
            "format": HIPNN_FORMAT_NAME,
            "version": HIPNN_FORMAT_VERSION,
            "hipnn": model.params.to_dict(),
            "n_members": model.n_members,
            "self_energies_eV": list(model.self_energies_eV),
            "metadata": model.metadata,
        }
        tensors = {k: v.detach().cpu().to(torch.float64).contiguous() for k, v in model.networks.state_dict().items()}
        durable.write_torch(path, {"hyperparameters": json.dumps(hyper), "tensors": tensors})
        return path
    hyper = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "aev": model.aev_params.to_dict(),
        "layer_sizes": list(model.networks.layer_sizes),
        "n_members": model.n_members,
        "celu_alpha": model.networks.celu_alpha,
        "self_energies_eV": list(model.self_energies_eV),
        "metadata": model.metadata,
    }
    tensors = {k: v.detach().cpu().to(torch.float64).contiguous() for k, v in model.networks.state_dict().items()}
    durable.write_torch(path, {"hyperparameters": json.dumps(hyper), "tensors": tensors})
    return path


#: Models shipped with potforge, loadable by name.
PUBLISHED_MODELS = {"ani-al": Path(__file__).resolve().parent.parent / "published" / "ani-al" / "model-Al-75.info"}


def resolve_model_path(spec: str | Path) -> Path:
    """A model file path, or the packaged file of a published model named ``spec`` (``ani-al``)."""
    if isinstance(spec, str) and spec.lower() in PUBLISHED_MODELS:
        return PUBLISHED_MODELS[spec.lower()]
    return Path(spec)


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Load a model: a potforge ``.pt`` file (an ANI or a HIP-NN ensemble, as the file says),
    a NeuroChem ``.info`` file, or a published model by name (``"ani-al"``)."""
    path = resolve_model_path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory; give the model file (.pt) or a NeuroChem .info file")
    if path.suffix == ".info":
        model = load_neurochem(path)
    else:
        model = _load_potforge(path)
    return model.to(dtype=dtype, device=device)


def _load_potforge(path: Path):
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ModelFileError(f"{path} is not a readable potforge model (corrupt or truncated?): {exc}") from None
    except Exception as exc:  # torch's unpickler raises bare UnpicklingError subclasses
        raise ModelFileError(f"{path} is not a potforge model file: {type(exc).__name__}: {exc}") from None
    if not isinstance(blob, dict) or "hyperparameters" not in blob or "tensors" not in blob:
        raise ModelFileError(f"{path} is not a potforge model file (missing hyperparameters or tensors)")
    try:
        hyper = json.loads(blob["hyperparameters"])
        if isinstance(hyper, dict) and hyper.get("format") == HIPNN_FORMAT_NAME:
            return _load_hipnn(path, hyper, blob["tensors"])
        if hyper.get("format") != FORMAT_NAME:
            raise ModelFileError(f"{path}: unknown format {hyper.get('format')!r}")
        if int(hyper.get("version", 0)) > FORMAT_VERSION:
            raise ModelFileError(f"{path}: written by a newer potforge (format version {hyper['version']})")
        model = ANIEnsemble(
            AEVParams.from_dict(hyper["aev"]),
            tuple(hyper["layer_sizes"]),
            int(hyper["n_members"]),
            self_energies=hyper["self_energies_eV"],
            celu_alpha=float(hyper["celu_alpha"]),
            metadata=hyper.get("metadata", {}),
        )
    except ModelFileError:
        raise
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: invalid hyperparameters ({exc})") from None
    return _with_weights(path, model, blob["tensors"])


def _with_weights(path: Path, model, tensors: dict):
    """``model`` (freshly built from a file's hyperparameters) with the file's weights, each
    checked against the built network's names and shapes, loaded in float64."""
    expected = model.networks.state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ModelFileError(f"{path}: weights missing for {', '.join(missing[:4])}")
    for k, v in expected.items():
        if not isinstance(tensors[k], torch.Tensor) or tuple(tensors[k].shape) != tuple(v.shape):
            raise ModelFileError(f"{path}: weight {k} has the wrong shape")
    model = model.to(torch.float64)  # before loading, or float32 parameters would round the weights
    model.networks.load_state_dict({k: tensors[k].to(torch.float64) for k in expected})
    return model


def _load_hipnn(path: Path, hyper: dict, tensors: dict):
    """A HIP-NN ensemble rebuilt from its recorded hyperparameters, then its weights checked
    against the rebuilt network's and loaded (in float64, before any conversion)."""
    from potforge.model.hipnn import HipnnEnsemble, HipnnParams

    if int(hyper.get("version", 0)) > HIPNN_FORMAT_VERSION:
        raise ModelFileError(f"{path}: written by a newer potforge (format version {hyper['version']})")
    try:
        model = HipnnEnsemble(
            HipnnParams.from_dict(hyper["hipnn"]),
            int(hyper["n_members"]),
            self_energies=hyper["self_energies_eV"],
            metadata=hyper.get("metadata", {}),
            seed=None,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: invalid HIP-NN hyperparameters ({exc})") from None
    return _with_weights(path, model, tensors)


# --- NeuroChem -------------------------------------------------------------------------------


def _f32(x: float) -> float:
    # NeuroChem (and TorchANI's loader) hold AEV constants in float32; rounding them the same
    # way is what makes potforge reproduce the published energies to 1e-6 eV/atom in float64.
    return float(np.float32(x))


def _parse_neurochem_constants(path: Path) -> AEVParams:
    values: dict[str, list[float] | float | list[str]] = {}
    try:
        for line in path.read_text().splitlines():
            if "=" not in line:
                continue
            name, value = (x.strip() for x in line.split("=", 1))
            items = [x.strip() for x in value.strip("[]").split(",")]
            if name == "Atyp":
                values[name] = items
            elif name in ("Rcr", "Rca"):
                values[name] = float(value)
            elif name in ("EtaR", "ShfR", "Zeta", "ShfZ", "EtaA", "ShfA"):
                values[name] = [float(x) for x in items]
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"cannot read NeuroChem AEV constants {path}: {exc}") from None
    need = ["Rcr", "Rca", "EtaR", "ShfR", "Zeta", "ShfZ", "EtaA", "ShfA", "Atyp"]
    missing = [k for k in need if k not in values]
    if missing:
        raise ModelFileError(f"NeuroChem AEV constants {path} lack {', '.join(missing)}")
    for k in ("EtaR", "Zeta", "EtaA"):
        if len(values[k]) != 1:  # type: ignore[arg-type]
            raise ModelFileError(f"{path}: only one {k} value is supported")
    return AEVParams(
        elements=tuple(values["Atyp"]),  # type: ignore[arg-type]
        radial_cutoff=_f32(values["Rcr"]),  # type: ignore[arg-type]
        radial_eta=_f32(values["EtaR"][0]),  # type: ignore[index]
        radial_shifts=tuple(_f32(x) for x in values["ShfR"]),  # type: ignore[union-attr]
        angular_cutoff=_f32(values["Rca"]),  # type: ignore[arg-type]
        angular_eta=_f32(values["EtaA"][0]),  # type: ignore[index]
        angular_zeta=_f32(values["Zeta"][0]),  # type: ignore[index]
        angular_shifts=tuple(_f32(x) for x in values["ShfA"]),  # type: ignore[union-attr]
        angular_sections=tuple(_f32(x) for x in values["ShfZ"]),  # type: ignore[union-attr]
    )


def _parse_sae(path: Path, elements: tuple[str, ...]) -> list[float]:
    found: dict[str, float] = {}
    try:
        for line in path.read_text().splitlines():
            if "=" not in line:
                continue
            key, value = line.split("=", 1)
            # float32 in Hartree, as NeuroChem and TorchANI hold it (see _f32)
            found[key.split(",")[0].strip()] = _f32(float(value)) * HARTREE_EV
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"cannot read NeuroChem self energies {path}: {exc}") from None
    missing = [el for el in elements if el not in found]
    if missing:
        raise ModelFileError(f"{path} has no self energy for {', '.join(missing)}")
    return [found[el] for el in elements]


def _parse_nnf(path: Path) -> list[dict[str, str]]:
    """Layers of a NeuroChem ``.nnf`` file as dicts of their ``key=value;`` entries."""
    try:
        raw = path.read_bytes()
        text = bz2.decompress(raw[raw.index(b"=") + 2 :]).decode("ascii")
    except (OSError, ValueError, EOFError) as exc:
        raise ModelFileError(f"cannot decompress NeuroChem network {path}: {exc}") from None
    layers = []
    for body in text.split("layer [")[1:]:
        entries = {}
        for item in body.split(";"):
            if "=" in item:
                k, v = item.split("=", 1)
                entries[k.strip()] = v.strip()
        layers.append(entries)
    if not layers:
        raise ModelFileError(f"no layers found in NeuroChem network {path}")
    return layers


def _read_param(path: Path, count: int) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype="<f4")
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc}") from None
    if data.size != count:
        raise ModelFileError(f"{path} holds {data.size} numbers, the layer needs {count}")
    return data.astype(np.float64)


def _load_member(directory: Path, element: str) -> tuple[list[int], list[tuple[np.ndarray, np.ndarray]]]:
    nnf = directory / f"ANN-{element}.nnf"
    if not nnf.exists():
        raise ModelFileError(f"missing NeuroChem network {nnf}")
    sizes: list[int] = []
    params = []
    layers = _parse_nnf(nnf)
    for k, layer in enumerate(layers):
        try:
            n_in, n_out = int(layer["blocksize"]), int(layer["nodes"])
            activation = int(layer["activation"])
            wfile = layer["weights"].split("FILE:")[1].split("[")[0]
            bfile = layer["biases"].split("FILE:")[1].split("[")[0]
        except (KeyError, IndexError, ValueError) as exc:
            raise ModelFileError(f"{nnf}: layer {k} is malformed ({exc})") from None
        last = k == len(layers) - 1
        if (last and activation != 6) or (not last and activation != 9):
            raise ModelFileError(
                f"{nnf}: layer {k} has activation {activation}; potforge supports CELU (9) hidden, linear (6) output"
            )
        if not sizes:
            sizes.append(n_in)
        elif sizes[-1] != n_in:
            raise ModelFileError(f"{nnf}: layer {k} input size {n_in} != previous output {sizes[-1]}")
        sizes.append(n_out)
        w = _read_param(directory / wfile, n_in * n_out).reshape(n_out, n_in).T  # stored (out, in)
        b = _read_param(directory / bfile, n_out)
        params.append((w, b))
    return sizes, params


def load_neurochem(info_file: str | Path) -> ANIEnsemble:
    """Load a NeuroChem ensemble (e.g. the published ANI-Al ``model-Al-75.info``) in float64, eV."""
    info_file = Path(info_file)
    try:
        lines = [x.strip() for x in info_file.read_text().splitlines() if x.strip()]
        const_name, sae_name, prefix, count = lines[:4]
        n_members = int(count)
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{info_file} is not a NeuroChem .info file ({exc})") from None
    root = info_file.parent
    aev = _parse_neurochem_constants(root / const_name)
    sae = _parse_sae(root / sae_name, aev.elements)
    members = []
    sizes: list[int] | None = None
    for m in range(n_members):
        directory = root / f"{prefix}{m}" / "networks"
        per_element = {}
        for el in aev.elements:
            s, params = _load_member(directory, el)
            if sizes is None:
                sizes = s
            elif s != sizes:
                raise ModelFileError(f"{directory}: layer sizes {s} differ from member 0's {sizes}")
            per_element[el] = params
        members.append(per_element)
    assert sizes is not None
    model = ANIEnsemble(
        aev,
        tuple(sizes),
        n_members,
        self_energies=sae,
        celu_alpha=0.1,
        metadata={"source": f"NeuroChem {info_file.name}", "energy_unit_converted_from": "Hartree"},
    ).to(torch.float64)
    state = {}
    for el in aev.elements:
        n_layers = len(sizes) - 1
        for k in range(n_layers):
            w = np.stack([members[m][el][k][0] for m in range(n_members)])
            b = np.stack([members[m][el][k][1] for m in range(n_members)])[:, None, :]
            if k == n_layers - 1:  # the output layer gives Hartree: convert to eV here, in float64
                w, b = w * HARTREE_EV, b * HARTREE_EV
            state[f"w_{el}_{k}"] = torch.from_numpy(w)
            state[f"b_{el}_{k}"] = torch.from_numpy(b)
    model.networks.load_state_dict(state)
    return model
