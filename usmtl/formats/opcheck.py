"""What a SavedModel's graph can do, checked before it is loaded.

A SavedModel is a program: its graph may read and write files (``ReadFile``, ``WriteFile``,
``MatchingFiles``...), save and restore checkpoints anywhere, run Python (``PyFunc``) or
print to a file, and ``tf.saved_model.load`` then running its signature runs all of it. The
sender also supplies the side file (``usmtl_export.json``) that makes usmtl treat it as its
own export. So :func:`require_safe_savedmodel` reads ``saved_model.pb`` as a protocol buffer
(nothing is executed), lists the ops of every graph and of every function in the function
library, and refuses the ones that reach outside the model (:data:`DENIED`, :data:`DENIED_PREFIXES`),
unless the user trusts the model (``--trust-model``).

The saver's own functions (what ``saver_def`` names: a SavedModel saves and restores its
variables with ``SaveV2``, ``RestoreV2``, ``MergeV2Checkpoints``) may hold those ops and only
those; any other denied op anywhere is refused. usmtl's own exports pass (their serving
graph resizes, casts and convolves). A TFLite file is not checked this way: see docs/deployment.md.

Example:
    >>> from usmtl.formats.opcheck import denied_ops
    >>> denied_ops("exports/quickstart/1")  # doctest: +SKIP
    {}
"""

from __future__ import annotations

import os
import re

from usmtl.errors import UsmtlError

# Ops that touch files, run Python, talk to other processes or print somewhere.
DENIED = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "Save", "SaveV2", "SaveSlices", "Restore",
    "RestoreV2", "RestoreSlice", "MergeV2Checkpoints", "ShardedFilename", "ShardedFilespec",
    "PyFunc", "PyFuncStateless", "EagerPyFunc", "Print", "PrintV2", "ImmutableConst",
    "DeleteFile", "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary",
    "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary",
    "WriteGraphSummary", "WriteRawProtoSummary", "ImportEvent", "FlushSummaryWriter",
    "SaveDataset", "SaveDatasetV2", "LoadDataset", "DatasetToTFRecord", "Rpc", "TryRpc",
    "RpcClient", "RpcServer", "RpcServerStart", "RpcServerRegister", "RpcCall",
    "RpcCheckStatus", "RpcGetValue", "SendTPUEmbeddingGradients", "_Send", "_Recv", "Send",
    "Recv", "_HostSend", "_HostRecv", "ReaderReadV2", "ReaderRead",
})
# Families: file readers and file-backed datasets, debug ops that dump tensors to disk.
DENIED_PREFIXES = ("Debug", "TFRecord", "TextLine", "FixedLengthRecord", "WholeFile",
                   "IdentityReader", "LMDB", "Experimental", "Snapshot", "CSVDataset",
                   "SqlDataset", "Reader", "DecodeProtoV2", "EncodeProto", "Load", "Save",
                   "Restore")
# What the saver's functions (save and restore of the variables) are expected to run.
SAVER_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename",
                       "ShardedFilespec"})


def is_denied(op: str) -> bool:
    """True for an op that reaches outside the model (file, Python, network, printing)."""
    return op in DENIED or op.startswith(DENIED_PREFIXES)


def _called(node) -> set[str]:
    """Names of the functions a node calls (its ``f``, ``then_branch``... attributes)."""
    names = set()
    for value in node.attr.values():
        if value.HasField("func"):
            names.add(value.func.name)
        names.update(f.name for f in value.list.func)
    names.add(node.op)  # a function called by name as an op
    return names


def denied_ops(folder: str) -> dict[str, list[str]]:
    """``{op: [where, ...]}`` for the denied ops of the SavedModel in ``folder`` (empty:
    none). Reads ``saved_model.pb`` only; runs nothing.

    Raises:
        UsmtlError: no ``saved_model.pb``, or one that does not parse.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(folder, "saved_model.pb")
    model = saved_model_pb2.SavedModel()
    try:
        with open(path, "rb") as f:
            model.ParseFromString(f.read())
    except (OSError, ValueError, RuntimeError) as exc:
        raise UsmtlError(f"{path}: not a readable SavedModel ({type(exc).__name__}: {exc}). "
                         f"Received: {path}") from None
    found: dict[str, list[str]] = {}
    for graph in model.meta_graphs:
        library = {f.signature.name: f for f in graph.graph_def.library.function}
        saver = _saver_functions(graph, library)
        for node in graph.graph_def.node:
            if is_denied(node.op) and not (node.op in SAVER_OPS and node.name in saver):
                found.setdefault(node.op, []).append(f"graph node {node.name!r}")
        for name, function in library.items():
            for node in function.node_def:
                if is_denied(node.op) and not (node.op in SAVER_OPS and name in saver):
                    found.setdefault(node.op, []).append(f"function {name!r}")
    return found


def _saver_functions(graph, library) -> set[str]:
    """Graph nodes and library functions reached only from the saver's save and restore
    nodes (``saver_def``), not from any other node."""
    def closure(starts):
        seen, todo = set(), list(starts)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in library:
                for node in library[name].node_def:
                    todo += [c for c in _called(node) if c in library]
            elif name in nodes:
                node = nodes[name]
                todo += [re.split(r"[:^]", i.lstrip("^"))[0] for i in node.input]
                todo += [c for c in _called(node) if c in library]
        return seen

    nodes = {n.name: n for n in graph.graph_def.node}
    saver_def = graph.saver_def
    starts = [re.split(r":", t)[0] for t in (saver_def.save_tensor_name,
                                             saver_def.restore_op_name) if t]
    if not starts:
        return set()
    from_saver = closure(starts)
    others = closure([n for n in nodes if n not in from_saver])
    return from_saver - others


def require_safe_savedmodel(folder: str, trust: bool = False) -> None:
    """Refuse a SavedModel whose graph reaches outside the model, unless ``trust``.

    Raises:
        UsmtlError: the denied ops found, where, and the way to load it anyway.
    """
    if trust:
        return
    found = denied_ops(folder)
    if found:
        listed = "; ".join(f"{op} in {', '.join(sorted(set(where))[:3])}"
                           for op, where in sorted(found.items()))
        raise UsmtlError(f"{folder}: the SavedModel's graph holds ops that read or write files, "
                         f"run Python or reach other processes, which a model does not need: "
                         f"{listed}. Loading it would run them. If you trust its sender, pass "
                         f"--trust-model. Received: {sorted(found)}")
