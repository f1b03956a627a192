"""The inputs and outputs of an ONNX model, read from its protobuf bytes without the ``onnx`` package.

The agent checks a package's graph against its manifest when it installs the package; importing
``onnx`` for that (with protobuf and ml_dtypes: ~7 MB and ~100 ms) would stay in the agent's memory
for good. This reader walks the protobuf wire format for the few fields the check needs and skips
everything else by its length, so a 100-MB model costs one pass over its field headers:

    ModelProto.graph (7) → GraphProto.input (11) / output (12) / initializer (5) →
    ValueInfoProto.name (1), .type (2) → TypeProto.tensor_type (1) → elem_type (1), shape (2) →
    TensorShapeProto.dim (1) → dim_value (1) | dim_param (2);   TensorProto.name (8)

``versions`` reads the model's IR version and operator sets (``ModelProto.ir_version`` (1), ``opset_import``
(8)). ``external_data`` (and ``walk``, which also gives the operator domains the nodes use) finds the
tensors whose bytes live in another file (``data_location: EXTERNAL``, as PyTorch's exporter writes by
default): initializers, sparse initializers and tensor attributes (``Constant``) of the main graph, of
every subgraph (``Loop``/``If``/``Scan`` bodies) and of every local function. It walks node attributes
too, so it costs more than ``graph_io`` on models of many nodes (see ``golden.check_spec``: one pass,
weights skipped by their length).

Limits: only what ``golden.check_spec`` compares (names, element types, dimensions, where the data
lives); a model whose graph field is absent or whose bytes break the wire format raises
``ValueError``, which the caller reports as an unreadable model, as does one with subgraphs nested
deeper than ``MAX_DEPTH`` (protobuf's own parsers stop at 100), or with more than ``MAX_INITIALIZERS``
initializers or ``MAX_NODES`` nodes (each is read in Python). Field numbers are those of
onnx.proto (stable since IR version 3).
"""

from __future__ import annotations

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(buf: memoryview, i: int, end: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= end or shift > 63:
            raise ValueError("truncated or overlong varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _fields(buf: memoryview, start: int, end: int):
    """(field number, wire type, value) of one message: value is an int, or (start, end) of a LEN field."""
    i = start
    value: int | tuple[int, int] | None
    while i < end:
        key, i = _varint(buf, i, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, i = _varint(buf, i, end)
        elif wire == _LEN:
            n, i = _varint(buf, i, end)
            if i + n > end:
                raise ValueError(f"field {number} runs past its message")
            value, i = (i, i + n), i + n
        elif wire == _I64:
            value, i = None, i + 8
        elif wire == _I32:
            value, i = None, i + 4
        else:
            raise ValueError(f"wire type {wire} of field {number} is not used by ONNX")
        if i > end:
            raise ValueError(f"field {number} runs past its message")
        if number == 0:
            raise ValueError("field number 0")
        yield number, wire, value


def _string(buf: memoryview, span) -> str:
    return bytes(buf[span[0] : span[1]]).decode("utf-8", errors="replace")


# TypeProto's other kinds (sequence_type 4, map_type 5, sparse_tensor_type 8), returned as the element type
# ``-field``: no tensor of numbers the agent reads (a scikit-learn classifier's ZipMap is a sequence of maps)
NOT_TENSOR = {-4: "sequence", -5: "map", -8: "sparse tensor"}


def _value_info(buf: memoryview, span) -> tuple[str, int, list]:
    name, elem, dims = "", 0, []
    for num, wire, v in _fields(buf, *span):
        if num == 1 and wire == _LEN:
            name = _string(buf, v)
        elif num == 2 and wire == _LEN:  # TypeProto
            for tnum, twire, tv in _fields(buf, *v):
                if -tnum in NOT_TENSOR and twire == _LEN:
                    elem = -tnum
                if tnum != 1 or twire != _LEN:  # only tensor_type
                    continue
                for snum, swire, sv in _fields(buf, *tv):
                    if snum == 1 and swire == _VARINT:
                        elem = sv
                    elif snum == 2 and swire == _LEN:  # TensorShapeProto
                        for dnum, dwire, dv in _fields(buf, *sv):
                            if dnum == 1 and dwire == _LEN:
                                dims.append(_dim(buf, dv))
    return name, elem, dims


def _dim(buf: memoryview, span) -> int | str:
    value: int | str = "?"
    for num, wire, v in _fields(buf, *span):
        if num == 1 and wire == _VARINT:
            value = v - (1 << 64) if v >= 1 << 63 else v
        elif num == 2 and wire == _LEN:
            value = _string(buf, v) or "?"
    return value


# initializers and nodes of a model's main graph: ResNet-50 has ~320 initializers and ~180 nodes, its INT8 (QDQ)
# form a few thousand of each, a large transformer's export tens of thousands
MAX_INITIALIZERS = MAX_NODES = 250_000


def _too_many(where: str, what: str) -> str:
    return (
        f"{where} holds more than {MAX_NODES:,} {what} (a large network has thousands of each): "
        "fold constants into fewer tensors"
    )


def graph_io(data: bytes | memoryview) -> tuple[dict[str, tuple[int, list]], dict[str, tuple[int, list]]]:
    """``({input: (elem_type, dims)}, {output: (elem_type, dims)})`` of an ONNX model's main graph;
    initializers listed as inputs (older exporters do) are left out. ``dims`` holds ints, or the
    symbolic name (``"?"`` when unnamed). Raises ``ValueError`` on bytes that are not such a model."""
    buf = memoryview(data)
    graph = None
    for num, wire, v in _fields(buf, 0, len(buf)):
        if num == 7 and wire == _LEN:
            graph = v
    if graph is None:
        raise ValueError("no graph in the model (is it an ONNX file?)")
    n_init = n_nodes = 0  # initializers (sparse ones too), nodes: counted until one passes its bound
    for num, wire, _v in _fields(buf, *graph):
        if wire == _LEN and num in (5, 15, 1):
            n_init, n_nodes = n_init + (num != 1), n_nodes + (num == 1)
            if n_init > MAX_INITIALIZERS or n_nodes > MAX_NODES:
                # each is read in Python at every check (build, verify, the agent's install): millions of tiny
                # ones in a package's 2 GB took the gateway minutes of CPU and gigabytes for their names
                raise ValueError(
                    _too_many("its main graph", "nodes" if n_nodes > MAX_NODES else "initializers")
                )
    inits: set[str] = set()
    inputs, outputs = [], []
    for num, wire, v in _fields(buf, *graph):
        if wire != _LEN:
            continue
        if num == 5:  # TensorProto: only its name (8)
            inits.update(_string(buf, tv) for tn, tw, tv in _fields(buf, *v) if tn == 8 and tw == _LEN)
        elif num == 11:
            inputs.append(_value_info(buf, v))
        elif num == 12:
            outputs.append(_value_info(buf, v))
    return ({n: (e, d) for n, e, d in inputs if n not in inits}, {n: (e, d) for n, e, d in outputs})


def versions(data: bytes | memoryview) -> tuple[int, dict[str, int]]:
    """``(ir_version, {operator set domain: version})`` of an ONNX model (``ModelProto.ir_version`` (1),
    ``opset_import`` (8): ``OperatorSetIdProto.domain`` (1), ``version`` (2)); the default domain is named
    ``"ai.onnx"`` (written as "" or "ai.onnx"). Raises ``ValueError`` on bytes that are not an ONNX model."""
    buf = memoryview(data)
    ir, opsets = 0, {}
    for num, wire, v in _fields(buf, 0, len(buf)):
        if num == 1 and wire == _VARINT:
            ir = v
        elif num == 8 and wire == _LEN:
            domain, version = "", 0
            for onum, owire, ov in _fields(buf, *v):
                if onum == 1 and owire == _LEN:
                    domain = _string(buf, ov)
                elif onum == 2 and owire == _VARINT:
                    version = ov - (1 << 64) if ov >= 1 << 63 else ov
            opsets[domain or "ai.onnx"] = version
    return ir, opsets


MAX_DEPTH = 100  # nested messages (subgraphs in attributes): protobuf's default recursion limit
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


def external_data(data: bytes | memoryview) -> list[tuple[str, str]]:
    """``[(tensor name, location), ...]`` of every tensor of the model stored outside it
    (``data_location: EXTERNAL``), in the order met; ``location`` is the ``external_data`` entry of
    that key ("" when absent). Raises ``ValueError`` on bytes that are not an ONNX model."""
    return walk(data)[0]


def walk(data: bytes | memoryview) -> tuple[list[tuple[str, str]], dict[str, str], set[str]]:
    """One pass over the whole model: ``external_data``'s list; ``{operator domain: the first op_type met in
    it}`` of every node (the main graph's, its subgraphs', the local functions'; the default domain named
    ``"ai.onnx"``); and the domains of the model's local functions (``ModelProto.functions`` (25):
    ``FunctionProto.domain`` (10)), whose nodes call them. Raises ``ValueError`` on bytes that are not an
    ONNX model."""
    buf = memoryview(data)
    found: list[tuple[str, str]] = []
    domains: dict[str, str] = {}
    functions: set[str] = set()
    # tensors and nodes of every graph and function, bounded as graph_io bounds the main graph's
    seen = {"tensors": 0, "nodes": 0}

    def count(what: str) -> None:
        seen[what] += 1
        if seen[what] > MAX_NODES:
            raise ValueError(_too_many("the model (its subgraphs and functions included)", what))

    def tensor(span, depth: int) -> None:
        count("tensors")
        name, location, external = "", "", False
        for num, wire, v in _fields(buf, *span):
            if num == 8 and wire == _LEN:
                name = _string(buf, v)
            elif num == 14 and wire == _VARINT:
                external = v == _EXTERNAL
            elif num == 13 and wire == _LEN:  # StringStringEntryProto: key (1), value (2)
                kv = {k: _string(buf, kv_v) for k, kw, kv_v in _fields(buf, *v) if kw == _LEN}
                if kv.get(1) == "location":
                    location = kv.get(2, "")
        if external:
            found.append((name, location))

    def sparse(span, depth: int) -> None:  # SparseTensorProto: values (1), indices (2)
        for num, wire, v in _fields(buf, *span):
            if num in (1, 2) and wire == _LEN:
                tensor(v, depth)

    def node(span, depth: int) -> None:  # NodeProto.op_type (4), attribute (5), domain (7)
        count("nodes")
        op, domain = "", ""
        for num, wire, v in _fields(buf, *span):
            if num == 5 and wire == _LEN:
                attribute(v, depth)
            elif num == 4 and wire == _LEN:
                op = _string(buf, v)
            elif num == 7 and wire == _LEN:
                domain = _string(buf, v)
        domains.setdefault(domain or "ai.onnx", op)

    def attribute(span, depth: int) -> None:  # t (5), g (6), tensors (10), graphs (11), sparse (22, 23)
        for num, wire, v in _fields(buf, *span):
            if wire != _LEN:
                continue
            if num in (5, 10):
                tensor(v, depth)
            elif num in (6, 11):
                graph(v, depth + 1)
            elif num in (22, 23):
                sparse(v, depth)

    def graph(span, depth: int) -> None:  # node (1), initializer (5), sparse_initializer (15)
        if depth > MAX_DEPTH:
            raise ValueError(f"subgraphs nested deeper than {MAX_DEPTH}")
        for num, wire, v in _fields(buf, *span):
            if wire != _LEN:
                continue
            if num == 1:
                node(v, depth)
            elif num == 5:
                tensor(v, depth)
            elif num == 15:
                sparse(v, depth)

    has_graph = False
    for num, wire, v in _fields(buf, 0, len(buf)):
        if num == 7 and wire == _LEN:  # the main graph
            has_graph = True
            graph(v, 0)
        elif num == 25 and wire == _LEN:  # FunctionProto.node (7), domain (10)
            for fnum, fwire, fv in _fields(buf, *v):
                if fnum == 7 and fwire == _LEN:
                    node(fv, 1)
                elif fnum == 10 and fwire == _LEN:
                    functions.add(_string(buf, fv) or "ai.onnx")
    if not has_graph:
        raise ValueError("no graph in the model (is it an ONNX file?)")
    return found, domains, functions
