"""A FusionClassifier served by ONNX Runtime, part by part: each encoder and the fusion head is exported with
`torch.onnx` (dynamic batch axes) and run by an `onnxruntime.InferenceSession`; the rest (collating, the log-mel
front end, placing each encoder's rows in the batch) stays in torch.

The log-mel front end is not exported: ONNX Runtime's STFT is several times slower than torch's FFT for these sizes.
Nothing here checks that an export answers as the model does: the caller does, at every load
(`app.engine.runtime`), whether the export is fresh or came from a cache.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.export import Dim

from app.model.audio_features import frame_count
from app.model.batch import Batch
from app.model.classifier import FusionClassifier
from app.model.encoders import TemporalCNN

log = logging.getLogger(__name__)

# Bumped whenever what a part holds or how it is exported changes, so older cached exports are not looked up.
EXPORT_FORMAT = 3
# Example batch size for tracing: not 0 or 1, which torch.export would specialise on.
_EXAMPLE_ROWS = 3
_EXPORTER_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._dynamo", "torch.fx")


@dataclass(frozen=True)
class Part:
    """One exportable piece of a model: what it is called, the module, its named inputs and an example of them."""

    name: str
    module: nn.Module
    inputs: tuple[str, ...]
    example: tuple[torch.Tensor, ...]
    dynamic: tuple  # per argument of forward, in order: its dynamic axes


class FusionHead(nn.Module):
    """The fusion module and the classification head as one: (features [B, M, D], mask [B, M]) -> logits."""

    def __init__(self, fusion: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.fusion, self.head = fusion, head

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.fusion(feats, mask))


def _as_2d(module: nn.Module) -> nn.Module:
    """`module` (a copy) with every 1-D convolution, batch norm and max pool as its 2-D equivalent over [N, C, 1, T]."""
    if isinstance(module, nn.Conv1d):
        conv = nn.Conv2d(module.in_channels, module.out_channels, (1, module.kernel_size[0]),
                         stride=(1, module.stride[0]), padding=(0, module.padding[0]),  # type: ignore[index]
                         dilation=(1, module.dilation[0]), groups=module.groups, bias=module.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(module.weight.unsqueeze(2))
            if module.bias is not None:
                conv.bias.copy_(module.bias)  # type: ignore[union-attr]
        return conv.eval()
    if isinstance(module, nn.BatchNorm1d):
        norm = nn.BatchNorm2d(module.num_features, eps=module.eps)
        norm.load_state_dict(module.state_dict())
        return norm.eval()
    if isinstance(module, nn.MaxPool1d):
        return nn.MaxPool2d((1, module.kernel_size), stride=(1, module.stride),  # type: ignore[arg-type]
                            ceil_mode=module.ceil_mode)
    module = copy.copy(module)
    module._modules = {name: _as_2d(child) for name, child in module.named_children()}  # type: ignore[assignment]
    return module


class TemporalCNN2d(nn.Module):
    """`TemporalCNN` computed with 2-D layers over [N, mel bins, 1, frames]: the same numbers, and ONNX Runtime's
    blocked-layout convolutions apply to 2-D convolutions only (the default model's audio encoder ran 1.5x faster)."""

    def __init__(self, net: TemporalCNN) -> None:
        super().__init__()
        self.stem, self.blocks, self.pool = _as_2d(net.stem), _as_2d(net.blocks), _as_2d(net.pool)
        self.proj = copy.deepcopy(net.proj)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.stem(mel.transpose(1, 2))  # [N, 1, M, T] -> [N, M, 1, T]: mel bins as channels
        for block in self.blocks:
            x = torch.relu(block(x) + self.pool(x))
        return self.proj(x.mean(dim=(2, 3)))


class AllInputs(nn.Module):
    """Every encoder and the fusion head as one graph, for batches in which every sample has every modality: the
    model's inputs (image; ids, padding; mel: those it has, in that order) -> logits. One session run instead of
    one per part, and none of the bookkeeping between them (batch 1 ran its forward pass ~25% faster)."""

    def __init__(self, model: FusionClassifier, audio_cnn: nn.Module | None) -> None:
        super().__init__()
        self.modalities = tuple(model.modalities)
        self.image = model.encoders["image"] if "image" in self.modalities else None
        self.text = model.encoders["text"] if "text" in self.modalities else None
        self.audio = audio_cnn
        self.head = FusionHead(model.fusion, model.head)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feats, i = [], 0
        for m in self.modalities:
            if m == "text":
                feats.append(self.text(inputs[i], inputs[i + 1]))  # type: ignore[misc]
                i += 2
            else:
                feats.append(getattr(self, m)(inputs[i]))
                i += 1
        f = torch.stack(feats, dim=1)
        return self.head(f, torch.ones(f.shape[0], f.shape[1], dtype=torch.bool, device=f.device))


class AllInputsPath(nn.Module):
    """`model`, except that a batch in which every sample has every modality goes through `all_inputs` (an
    `OrtPart` of `AllInputs`); the log-mel front end stays torch."""

    def __init__(self, model: FusionClassifier, all_inputs: nn.Module) -> None:
        super().__init__()
        self.model, self.all_inputs = model, all_inputs

    def forward(self, batch: Batch) -> torch.Tensor:
        inputs = [getattr(batch, m) for m in self.model.modalities]
        if any(x is None or x.shape[0] != batch.size for x in inputs):
            return self.model(batch)
        args: list[torch.Tensor] = []
        for m, x in zip(self.model.modalities, inputs):
            if m == "text":
                args += [x, batch.text_padding]
            elif m == "audio":
                args.append(self.model.encoders["audio"].features(x) if x.dim() == 2 else x)
            else:
                args.append(x)
        return self.all_inputs(*args)


def parts_of(model: FusionClassifier) -> list[Part]:
    """The parts of `model` (as trained, on the CPU, in eval mode) that ONNX Runtime serves."""
    spec, rows = model.spec, _EXAMPLE_ROWS
    batch = Dim("batch", min=1)
    parts: list[Part] = []
    g = torch.Generator().manual_seed(0)
    if spec.image is not None:
        example = torch.randn(rows, spec.image.channels, spec.image.size, spec.image.size, generator=g)
        parts.append(Part("image", model.encoders["image"], ("image",), (example,), ({0: batch},)))
    if spec.text is not None:
        length = min(spec.text.max_tokens, 5)
        ids = torch.randint(1, 50, (rows, length), generator=g)
        padding = torch.zeros(rows, length, dtype=torch.bool)
        padding[0, length // 2 + 1:] = True
        axes: dict[int, Dim] = {0: batch}
        if spec.text.max_tokens > 1:  # a dimension that can only be 1 cannot be dynamic
            axes[1] = Dim("tokens", min=1, max=spec.text.max_tokens)
        parts.append(Part("text", model.encoders["text"], ("ids", "padding"), (ids, padding),
                          (axes, axes)))
    if spec.audio is not None:
        mel = torch.randn(rows, 1, spec.audio.n_mels, frame_count(spec.audio.clip_samples, spec.audio.hop_length),
                          generator=g)
        cnn = model.encoders["audio"].cnn
        exported = TemporalCNN2d(cnn) if isinstance(cnn, TemporalCNN) else cnn
        parts.append(Part("audio", exported, ("mel",), (mel,), ({0: batch},)))
    m = len(model.modalities)
    feats = torch.randn(rows, m, spec.fusion.dim, generator=g)
    mask = torch.ones(rows, m, dtype=torch.bool)
    mask[1, 0] = m == 1  # one row lacking a modality, where the model has more than one
    parts.append(Part("fusion", FusionHead(model.fusion, model.head).eval(), ("feats", "mask"), (feats, mask),
                      ({0: batch}, {0: batch})))
    encoders = [p for p in parts if p.name in model.modalities]
    audio = next((p.module for p in encoders if p.name == "audio"), None)
    # AllInputs.forward takes *inputs: to torch.export, one argument whose dynamic axes are a tuple of them.
    parts.append(Part("all", AllInputs(model, audio).eval(), tuple(n for p in encoders for n in p.inputs),
                      tuple(x for p in encoders for x in p.example),
                      (tuple(d for p in encoders for d in p.dynamic),)))  # type: ignore[arg-type]
    return parts


def export(part: Part) -> bytes:
    """The part as a serialized ONNX model (weights inline), its batch axes (and text length) dynamic."""
    with warnings.catch_warnings(), _quiet(_EXPORTER_LOGGERS):
        # The exporter warns and logs about its own internals (axis renaming, graph rewrites): not the user's.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            part.module.eval(),
            part.example,
            input_names=list(part.inputs),
            output_names=["output"],
            dynamic_shapes=part.dynamic,
            dynamo=True,
            verbose=False,
        )
    assert program is not None
    return program.model_proto.SerializeToString()


@contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over the model's configuration and every tensor of its state (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    spec = getattr(model, "spec", None)
    if spec is not None:
        h.update(spec.model_dump_json().encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of everything that shapes an export and how it runs (part of the cache key). Raises ImportError
    where ONNX Runtime or the exporter's packages are not installed."""
    import onnx
    import onnxruntime
    import onnxscript

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
        "format": str(EXPORT_FORMAT),
    }


def session(model: bytes, threads: int) -> object:
    """An ONNX Runtime CPU session for a serialized model, with `threads` intra-op threads and no spinning (the
    serving process shares its cores with the event loop)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings about unused initializers are not the user's
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OrtPart(nn.Module):
    """An ONNX Runtime session in the place of the module it was exported from: tensors in, a tensor out (CPU)."""

    def __init__(self, session: object, inputs: tuple[str, ...]) -> None:
        super().__init__()
        self.session = session
        self.inputs = inputs

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        feeds = {name: t.detach().contiguous().numpy() for name, t in zip(self.inputs, tensors)}
        return torch.from_numpy(self.session.run(None, feeds)[0])  # type: ignore[attr-defined]


def with_sessions(model: FusionClassifier, sessions: dict[str, object]) -> nn.Module:
    """A copy of `model` whose parts named in `sessions` run on ONNX Runtime (the log-mel front end stays torch)."""
    inputs = {p.name: p.inputs for p in parts_of(model)}
    served = copy.deepcopy(model).eval()
    for name, session in sessions.items():
        part = OrtPart(session, inputs[name])
        if name == "all":
            continue
        if name == "audio":
            served.encoders["audio"].cnn = part
        elif name == "fusion":
            served.fusion, served.head = part, nn.Identity()  # type: ignore[assignment]
        else:
            served.encoders[name] = part
    if "all" in sessions:
        return AllInputsPath(served, OrtPart(sessions["all"], inputs["all"])).eval()
    return served

