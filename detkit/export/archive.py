"""What detkit lets torch read from a ``.pt2`` archive: the program's JSON and plain tensor
bytes, nothing that torch would unpickle, load as native code or evaluate.

torch's reader (``torch.export.load``) runs what the file holds in several places: it unpickles
every weight or constant whose ``*_config.json`` entry says ``"use_pickle": true``, the custom
and opaque objects among the constants, and example inputs that do not read as plain tensors
(it falls back to ``weights_only=False``); it loads the native libraries under
``data/aotinductor/``; it ``exec``s the program's ``guards_code`` and hands its symbolic
expressions to ``sympy.sympify`` (``eval``); and the loaded program calls whatever its nodes
name (any attribute of ``torch``, ``torch.os.system`` included). :func:`check_archive` reads
the archive as the zip it is and accepts only the layout ``detkit.export.save`` writes:

* entries stored uncompressed under one folder, each name once: the archive's metadata, one
  program ``models/model.json``, the weights and constants as raw tensor bytes described by
  their ``*_config.json`` (none marked ``use_pickle``; each record as long as its tensor
  needs, so no entry makes torch allocate more than the file holds) and an empty
  ``data/sample_inputs/model.pt``;
* a program with no guard code, whose nodes call operators of the libraries in
  :data:`OP_LIBRARIES` (none taking a file name) or the symbolic-size arithmetic torch
  records, and whose symbolic expressions are sympy constructors of numbers and symbols.

Anything else is refused with one line naming the file and the entry, before torch sees it.
"""

from __future__ import annotations

import ast
import importlib
import io
import json
import re
import zipfile
from collections.abc import Iterator
from typing import Any, NoReturn

import torch
from torch._export.serde.serialize import deserialize_scalar_type
from torch.export.pt2_archive.constants import (
    AOTINDUCTOR_DIR,
    ARCHIVE_FORMAT_PATH,
    ARCHIVE_FORMAT_VALUE,
    ARCHIVE_VERSION_PATH,
    CONSTANTS_CONFIG_FILENAME_FORMAT,
    CONSTANTS_DIR,
    MODELS_FILENAME_FORMAT,
    SAMPLE_INPUTS_FILENAME_FORMAT,
    TENSOR_CONSTANT_FILENAME_PREFIX,
    WEIGHT_FILENAME_PREFIX,
    WEIGHTS_CONFIG_FILENAME_FORMAT,
    WEIGHTS_DIR,
)

from ..utils.errors import UserError

MODEL_NAME = "model"  # torch.export.save's name for a single program
PROGRAM = MODELS_FILENAME_FORMAT.format(MODEL_NAME)
SAMPLE_INPUTS = SAMPLE_INPUTS_FILENAME_FORMAT.format(MODEL_NAME)
METADATA = frozenset(
    {ARCHIVE_FORMAT_PATH, ARCHIVE_VERSION_PATH, "byteorder", ".data/version",
     ".data/serialization_id"}
)  # fmt: skip
# each payload config and the folder and file-name prefix of the tensor records it describes
PAYLOADS = {
    WEIGHTS_CONFIG_FILENAME_FORMAT.format(MODEL_NAME): (WEIGHTS_DIR, WEIGHT_FILENAME_PREFIX),
    CONSTANTS_CONFIG_FILENAME_FORMAT.format(MODEL_NAME): (
        CONSTANTS_DIR,
        TENSOR_CONSTANT_FILENAME_PREFIX,
    ),
}
RECORD = re.compile(
    "|".join(re.escape(folder + prefix) + r"\d+" for folder, prefix in PAYLOADS.values())
)
# operator namespaces a program may call, each with the module that registers its operators
OP_LIBRARIES = {"aten": None, "detkit": "detkit.layers", "torchvision": "torchvision"}
# arguments that make an operator read or write a file (aten::save, aten::from_file)
FILE_ARGUMENTS = frozenset({"file", "filename", "path"})
# the symbolic-size arithmetic an exported graph records, as torch serializes its targets
SYMBOLIC_OPS = frozenset(
    [f"_operator.{name}" for name in (
        "getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pos",
        "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_")]
    + [f"torch.{name}" for name in (
        "sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt")]
    + ["math.trunc"]
)  # fmt: skip
# sympy constructors that torch's serialized size expressions use; none builds a number larger
# than its arguments' product (no Pow, PowByNatural, FloatPow or LShift)
SYMPY_CONSTRUCTORS = frozenset(
    {"Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Mod", "Min", "Max", "Abs",
     "floor", "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality",
     "GreaterThan", "LessThan", "StrictGreaterThan", "StrictLessThan", "And", "Or", "Not",
     "Piecewise", "ExprCondPair", "Infinity", "NegativeInfinity", "IntInfinity",
     "NegativeIntInfinity", "BooleanTrue", "BooleanFalse", "FloorDiv", "ModularIndexing",
     "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "IntTrueDiv",
     "FloatTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
     "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "RShift"}
)  # fmt: skip
SYMPY_CONSTANTS = frozenset({"oo", "zoo", "nan", "true", "false", "int_oo"})
SYMBOL_NAME = re.compile(r"[a-z]+\d+")
PLAIN_STRING = re.compile(r"[A-Za-z0-9_]{1,64}")
EXPRESSION_NODES = (
    ast.Expression, ast.Call, ast.Name, ast.Constant, ast.keyword, ast.Load, ast.UnaryOp,
    ast.USub, ast.UAdd, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod,
    ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
)  # fmt: skip
LARGEST_INTEGER = 2**64


class ExportedProgramError(UserError, ValueError):
    """A ``.pt2`` file detkit does not load (or cannot: torch fails on it), named with the
    entry at fault."""


def check_archive(data: bytes, name: str) -> set[str]:
    """Refuses (:class:`ExportedProgramError`, naming ``name`` and the entry) the ``.pt2``
    archive ``data`` unless it holds only what ``detkit.export.save`` writes (module
    docstring); returns the modules that register the operators its program calls, imported
    (the user need not import ``torchvision`` or ``detkit.layers``)."""
    return _Archive(data, name).check()


class _Archive:
    def __init__(self, data: bytes, name: str) -> None:
        self.name = name
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, ValueError) as error:
            self.refuse("", f"is not a .pt2 archive (a zip file): {error}")
        infos = self.zip.infolist()
        if not infos:
            self.refuse("", "is an empty zip file, not a .pt2 archive")
        self.root = infos[0].filename.split("/", 1)[0] + "/"
        self.sizes: dict[str, int] = {}
        for info in infos:
            self.admit(info)

    def refuse(self, entry: str, problem: str) -> NoReturn:
        where = f"entry '{entry}' " if entry else ""
        message = (
            f"{self.name}: {where}{problem}; refused before torch reads the file "
            "(tools/export_model.py writes archives that load)"
        )  # names from the file are shown escaped, so the message stays one line
        raise ExportedProgramError(
            "".join(c if c.isprintable() else ascii(c)[1:-1] for c in message)
        )

    def admit(self, info: zipfile.ZipInfo) -> None:
        """Records an entry of the accepted layout, refuses any other."""
        entry = info.filename
        inner = entry.removeprefix(self.root)
        if inner == entry:
            self.refuse(entry, f"lies outside the archive's folder '{self.root}'")
        if inner in self.sizes:
            self.refuse(entry, "appears twice (a reader could take either copy)")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            self.refuse(entry, "is compressed or encrypted (torch stores every entry plainly)")
        if inner.startswith(AOTINDUCTOR_DIR):
            self.refuse(entry, "is AOTInductor native code, which torch would load and run")
        if not (inner in METADATA or inner in PAYLOADS or RECORD.fullmatch(inner)
                or inner in (PROGRAM, SAMPLE_INPUTS)):  # fmt: skip
            self.refuse(
                entry, "is no part of a program's graph or tensors (a pickled object, a "
                "legacy pickle or an extra file, which torch would read)"
            )  # fmt: skip
        self.sizes[inner] = info.file_size

    def read(self, inner: str) -> bytes:
        if inner not in self.sizes:
            self.refuse(self.root + inner, "is missing")
        try:
            return self.zip.read(self.root + inner)
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            self.refuse(self.root + inner, f"cannot be read ({error})")

    def read_json(self, inner: str) -> Any:
        data = self.read(inner)
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as error:
            self.refuse(self.root + inner, f"is not valid JSON: {error}")

    def check(self) -> set[str]:
        if self.read(ARCHIVE_FORMAT_PATH).decode(errors="replace") != ARCHIVE_FORMAT_VALUE:
            self.refuse(self.root + ARCHIVE_FORMAT_PATH, "does not say 'pt2'")
        for config, (folder, _) in PAYLOADS.items():
            self.check_payloads(config, folder)
        modules = self.check_program()
        if self.sizes.get(SAMPLE_INPUTS, 0):
            self.refuse(
                self.root + SAMPLE_INPUTS,
                "holds pickled example inputs, which torch would unpickle (with code, if "
                "they do not read as tensors)",
            )
        return modules

    def check_payloads(self, config: str, folder: str) -> None:
        """Every tensor of a weights or constants config is raw bytes in a record of the
        config's folder, at least as long as the tensor's view reaches."""
        entries = self.read_json(config)
        try:
            payloads = [
                (fqn, folder + meta["path_name"], meta["use_pickle"], meta["tensor_meta"])
                for fqn, meta in entries["config"].items()
            ]
        except (KeyError, TypeError, AttributeError) as error:
            self.refuse(self.root + config, f"is not a payload config torch writes ({error!r})")
        for fqn, record, use_pickle, tensor_meta in payloads:
            if use_pickle is not False:
                self.refuse(
                    self.root + record,
                    f"is marked \"use_pickle\" for '{fqn}' in {config}: torch would unpickle "
                    "it, running any code it holds",
                )
            if not RECORD.fullmatch(record):
                self.refuse(self.root + config, f"names '{record}' for '{fqn}'")
            if record not in self.sizes:
                self.refuse(self.root + record, f"is missing (named for '{fqn}' in {config})")
            try:
                needed, item = _tensor_extent(tensor_meta)
            except (KeyError, TypeError, ValueError) as error:
                self.refuse(self.root + config, f"describes '{fqn}' oddly ({error!r})")
            size = self.sizes[record]
            if size < needed or size % item:
                self.refuse(
                    self.root + record,
                    f"holds {size} bytes where '{fqn}' in {config} needs {needed}",
                )

    def check_program(self) -> set[str]:
        program = self.read_json(PROGRAM)
        entry = self.root + PROGRAM
        if not isinstance(program, dict):
            self.refuse(entry, "is not a serialized program")
        if program.get("guards_code"):
            self.refuse(entry, "holds guard code, which torch would run with exec")
        operators = set()
        try:
            for key, value in _strings(program):
                if key == "expr_str":
                    problem = _expression_problem(value)
                    if problem:
                        self.refuse(entry, f"holds the symbolic expression {value!r}: {problem}")
                elif value not in SYMBOLIC_OPS:
                    operators.add(value)
        except RecursionError:
            self.refuse(entry, "is nested too deeply")
        return self.check_operators(sorted(operators))

    def check_operators(self, targets: list[str]) -> set[str]:
        """Imports the libraries the program's operators come from; refuses other callables,
        unknown operators and operators that take a file name."""
        entry = self.root + PROGRAM
        operators = []
        for target in targets:
            parts = target.split(".")
            if len(parts) != 5 or parts[:2] != ["torch", "ops"] or parts[2] not in OP_LIBRARIES:
                self.refuse(
                    entry, f"calls '{target}', which is not an operator of "
                    f"{', '.join(sorted(OP_LIBRARIES))}"
                )  # fmt: skip
            operators.append(parts[2:])
        modules = {OP_LIBRARIES[namespace] for namespace, _, _ in operators} - {None}
        for module in sorted(modules):
            importlib.import_module(module)
        for namespace, name, overload in operators:
            try:
                operator = getattr(getattr(getattr(torch.ops, namespace), name), overload)
            except (AttributeError, RuntimeError):
                operator = None
            if not isinstance(operator, torch._ops.OpOverload):
                self.refuse(entry, f"calls the unknown operator '{namespace}::{name}.{overload}'")
            if any(argument.name in FILE_ARGUMENTS for argument in operator._schema.arguments):
                self.refuse(entry, f"calls '{namespace}::{name}', which reads or writes files")
        return modules


def _strings(value: Any) -> Iterator[tuple[str, str]]:
    """The program's node targets and symbolic expressions: ``("target" | "expr_str", text)``
    wherever they appear (graphs nest in higher-order operators' arguments)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("target", "expr_str") and isinstance(item, str):
                yield key, item
            else:
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _tensor_extent(meta: dict) -> tuple[int, int]:
    """The bytes a serialized tensor's view reaches in its record, and its element size."""
    item = deserialize_scalar_type(meta["dtype"]).itemsize
    sizes = [size["as_int"] for size in meta["sizes"]]
    strides = [stride["as_int"] for stride in meta["strides"]]
    offset = meta["storage_offset"]["as_int"]
    numbers = [*sizes, *strides, offset]
    if len(sizes) != len(strides) or any(type(n) is not int or n < 0 for n in numbers):
        raise ValueError(f"sizes {sizes}, strides {strides}, offset {offset}")
    if 0 in sizes:
        return 0, item
    last = offset + sum((size - 1) * stride for size, stride in zip(sizes, strides, strict=True))
    return (last + 1) * item, item


def _expression_problem(text: str) -> str:
    """Why ``sympy.sympify(text)`` might do more than build a size expression ("" if not):
    only calls of sympy constructors on numbers, symbols and plain strings pass."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        return f"not an expression ({error})"
    for node in ast.walk(tree):
        if not isinstance(node, EXPRESSION_NODES):
            return f"{type(node).__name__} is not part of a size expression"
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in SYMPY_CONSTRUCTORS
        ):
            return f"it calls {ast.unparse(node.func)!r}"
        if isinstance(node, ast.Name) and not (
            node.id in SYMPY_CONSTRUCTORS
            or node.id in SYMPY_CONSTANTS
            or SYMBOL_NAME.fullmatch(node.id)
        ):
            return f"it names {node.id!r}"
        if isinstance(node, ast.keyword) and not (node.arg and node.arg.isalpha()):
            return "it passes keyword arguments other than assumptions"
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, str) and not PLAIN_STRING.fullmatch(value):
                return f"it holds the string {value!r}"
            if isinstance(value, int) and abs(value) >= LARGEST_INTEGER:
                return "it holds an integer beyond 64 bits"
    return ""
