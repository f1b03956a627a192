"""Regenerate ``protocols/gen`` from every ``protocols/*.proto`` (needs grpcio-tools, the dev extra).

    python -m protocols.generate          # write
    python -m protocols.generate --check  # exit 1 if gen/ differs from what the .proto files give, or its
                                          # stubs need a newer grpcio/protobuf than pyproject.toml allows
                                          # (or were made by a newer grpcio-tools than its dev extra allows)

Generated modules import each other as ``protocols.gen.X_pb2``; nothing in gen/ is hand-edited.
"""

from __future__ import annotations

import re
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
GEN = HERE / "gen"
PYPROJECT = HERE.parent / "pyproject.toml"


def generate(out_dir: Path) -> dict[str, str]:
    from grpc_tools import protoc  # dev extra only

    protos = sorted(HERE.glob("*.proto"))
    out_dir.mkdir(parents=True, exist_ok=True)
    if protos:
        include = str(Path(protoc.__file__).parent / "_proto")
        args = [
            "protoc",
            f"-I{HERE}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
        ]
        if protoc.main(args + [str(p) for p in protos]) != 0:
            raise SystemExit("protoc failed")
    files: dict[str, str] = {}
    for path in sorted(out_dir.glob("*.py")):
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        # make sibling imports package-relative: "import x_pb2 as" -> "from protocols.gen import x_pb2 as"
        text = re.sub(r"^import (\w+_pb2) as", r"from protocols.gen import \1 as", text, flags=re.M)
        # drop grpc stubs for protos that declare no service
        if path.name.endswith("_pb2_grpc.py") and "Stub" not in text:
            path.unlink()
            continue
        path.write_text(text)
        files[path.name] = text
    return files


# the generator's own version, stamped into what it writes: a patch release of grpcio-tools (1.85.1 -> 1.85.4)
# changes these lines only, and the stubs still say what the .proto files say
_STAMPS = (
    (re.compile(r"^GRPC_GENERATED_VERSION = '[^']*'$", re.M), "GRPC_GENERATED_VERSION = '*'"),
    (re.compile(r"^# Protobuf Python Version: \S+$", re.M), "# Protobuf Python Version: *"),
    (
        re.compile(
            r"(ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,)\s*\d+,\s*\d+,\s*\d+,"
        ),
        r"\1 *,",
    ),
)


def unstamped(text: str) -> str:
    """``text`` without the generator's version stamps (``_STAMPS``)."""
    for pattern, plain in _STAMPS:
        text = pattern.sub(plain, text)
    return text


# what each stamp makes a stub need at import: the gRPC stub raises RuntimeError under a grpcio older than its
# GRPC_GENERATED_VERSION, the message module protobuf's VersionError under a runtime older than its
# ValidateProtobufRuntimeVersion numbers
_NEEDS = (
    ("grpcio", re.compile(r"^GRPC_GENERATED_VERSION = '(\d+)\.(\d+)\.(\d+)[^']*'$", re.M)),
    (
        "protobuf",
        re.compile(
            r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),"
        ),
    ),
)

Version = tuple[int, ...]


def needs(text: str) -> dict[str, Version]:
    """The grpcio and protobuf versions a generated module's stamps require at import, by distribution."""
    found = {}
    for dist, pattern in _NEEDS:
        m = pattern.search(text)
        if m:
            found[dist] = tuple(int(g) for g in m.groups())
    return found


def _v(version: Version) -> str:
    return ".".join(map(str, version))


def _floor(spec: str) -> Version | None:
    """The lowest version a requirement's specifier (``>=1.85.1,<2``) admits, None when it admits any."""
    lows = [
        tuple(int(x) for x in m.group(2).split("."))
        for m in re.finditer(r"(>=|==|~=)\s*(\d+(?:\.\d+)*)", spec)
    ]
    return max(lows) if lows else None


def _specs(requirements: list[str]) -> dict[str, str]:
    """Requirement strings (``grpcio>=1.85.1``, ``moto[server]>=5.0; python_version>'3.9'``) -> specifier by name."""
    specs: dict[str, str] = {}
    for req in requirements:
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[[^\]]*\])?\s*([^;]*)", req)
        if m:
            specs[m.group(1).lower().replace("_", "-")] = m.group(2).strip()
    return specs


def floor_problems(stubs: dict[str, str], pyproject_text: str) -> list[str]:
    """Each stub whose stamps need a newer grpcio or protobuf than pyproject.toml's dependencies allow (an
    install at the allowed floor would fail to import it), or were made by a newer grpcio-tools than the dev
    extra allows (an environment at that floor fails ``--check`` on them and would regenerate them older)."""
    project = tomllib.loads(pyproject_text).get("project", {})
    allowed = _specs(project.get("dependencies", []))
    tools = _specs(project.get("optional-dependencies", {}).get("dev", [])).get("grpcio-tools")
    problems = []
    for name, text in sorted(stubs.items()):
        for dist, need in needs(text).items():
            spec = allowed.get(dist)
            if spec is None:
                problems.append(
                    f"protocols/gen/{name} needs {dist}>={_v(need)} at import, and pyproject.toml's "
                    f"dependencies do not name {dist}: add {dist}>={_v(need)}"
                )
            else:
                low = _floor(spec)
                if low is None or low < need:
                    also = f" and the dev extra's grpcio-tools>={_v(need)}" if dist == "grpcio" else ""
                    problems.append(
                        f"protocols/gen/{name} needs {dist}>={_v(need)} at import, but pyproject.toml allows "
                        f"{dist}{spec or ' (any version)'}: raise its floor to {dist}>={_v(need)}{also}, or "
                        "regenerate the stubs with a grpcio-tools no newer than the floors"
                    )
            if dist != "grpcio":
                continue
            # GRPC_GENERATED_VERSION is the version of the grpcio-tools that wrote the stub
            tools_low = None if tools is None else _floor(tools)
            if tools_low is None or tools_low < need:
                allows = (
                    "does not name grpcio-tools" if tools is None else f"allows grpcio-tools{tools or ''}"
                )
                problems.append(
                    f"protocols/gen/{name} was made by grpcio-tools {_v(need)}, but pyproject.toml's dev extra "
                    f"{allows}: raise it to grpcio-tools>={_v(need)} (an older one fails `python -m "
                    "protocols.generate --check` on these stubs)"
                )
    return problems


def _installed_tools() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grpcio-tools")
    except PackageNotFoundError:
        return "(unknown version)"


def check(gen: Path = GEN, pyproject: Path = PYPROJECT) -> list[str]:
    """Why ``gen`` is not what the .proto files give with the installed grpcio-tools (empty: it is).

    The generator's version stamps (``_STAMPS``) are passed over when the committed ones are no newer than
    the ones it writes now: stubs of grpcio-tools 1.85.1 are current under 1.85.4. Committed stamps newer than
    that are reported (stubs regenerated with a newer grpcio-tools import only on a grpcio and protobuf that
    new), and so are stamps newer than pyproject.toml's floors for grpcio and protobuf."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
    current = {p.name: p.read_text() for p in gen.glob("*.py") if p.name != "__init__.py"}
    if {n: unstamped(t) for n, t in fresh.items()} != {n: unstamped(t) for n, t in current.items()}:
        return ["protocols/gen is stale: run `python -m protocols.generate`"]
    problems = []
    # the grpcio-tools that made the committed stubs: their GRPC_GENERATED_VERSION
    made_by = max((n["grpcio"] for n in map(needs, current.values()) if "grpcio" in n), default=None)
    installed = max((n["grpcio"] for n in map(needs, fresh.values()) if "grpcio" in n), default=None)
    for name in sorted(current):
        now = needs(fresh[name])
        for dist, need in needs(current[name]).items():
            if dist in now and need > now[dist]:
                # the grpcio-tools to install: the one that made the stubs (a grpcio stamp is its version)
                tools = need if dist == "grpcio" else made_by
                if tools is not None and (installed is None or tools > installed):
                    upgrade = f"pip install 'grpcio-tools>={_v(tools)}'"
                else:
                    upgrade = "pip install --upgrade grpcio-tools"
                problems.append(
                    f"protocols/gen/{name} was generated for {dist}>={_v(need)}, but the installed grpcio-tools "
                    f"{_installed_tools()} is older than the one that made it (it writes {dist}>={_v(now[dist])}): "
                    f"{upgrade}, then check again"
                )
    try:
        pyproject_text = pyproject.read_text()
    except OSError as exc:
        return [*problems, f"cannot read {pyproject} to check the stubs' grpcio and protobuf floors: {exc}"]
    return problems + floor_problems(current, pyproject_text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    written = generate(GEN)
    (GEN / "__init__.py").write_text('"""Generated by protocols/generate.py; never edit by hand."""\n')
    if PYPROJECT.is_file():  # a newer grpcio-tools writes stubs that need a newer grpcio/protobuf: say so now
        for problem in floor_problems(written, PYPROJECT.read_text()):
            print(problem, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
