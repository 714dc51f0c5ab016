"""Every TensorRT name perfsuite/backends/tensorrt.py uses exists on the real TensorRT-RTX bindings.

The runtime half (deserialize, bind by name, execute_async_v3) runs only on a GPU the runtime
supports, which CI does not have; this test catches a renamed or removed call anyway. The names
are not listed by hand: they are read from the module's source. A small type inference over its
AST follows where TensorRT objects come from (``trt = flavor.module()``, ``trt.Builder(...)``,
the documented return types of factory methods in :data:`RETURNS`, ``self.x = ...`` in one method
read in another, arguments passed to the module's own functions) and records every attribute read,
called, assigned or probed with hasattr/getattr on them. An attribute taken from a TensorRT
object whose type the inference cannot tell fails the test, so a new call cannot go unchecked.
"""

from __future__ import annotations

import ast
import inspect

import pytest

from perfsuite.backends import tensorrt as backend
from perfsuite.backends.tensorrt import TENSORRT_RTX

MODULE = "<module>"
# What TensorRT's factory methods and properties return (NVIDIA's Python API reference); the
# inference needs these to follow an object to its type. A call missing here fails the test below.
RETURNS = {
    ("Builder", "create_network"): "INetworkDefinition",
    ("Builder", "create_builder_config"): "IBuilderConfig",
    ("Builder", "create_optimization_profile"): "IOptimizationProfile",
    ("Builder", "build_serialized_network"): "IHostMemory",
    ("INetworkDefinition", "get_input"): "ITensor",
    ("ITensor", "dtype"): "DataType",
    ("OnnxParser", "get_error"): "ParserError",
    ("ParserError", "code"): "ErrorCode",
    ("IBuilderConfig", "create_timing_cache"): "ITimingCache",
    ("IBuilderConfig", "get_timing_cache"): "ITimingCache",
    ("Runtime", "deserialize_cuda_engine"): "ICudaEngine",
    ("ICudaEngine", "create_execution_context"): "IExecutionContext",
    ("ICudaEngine", "get_tensor_dtype"): "DataType",
}
# Names the inference must find, or it no longer follows the code (a floor, not the list).
MUST_FIND = {("Runtime", "deserialize_cuda_engine"), ("IExecutionContext", "execute_async_v3"),
             ("IExecutionContext", "set_input_shape"), ("IExecutionContext", "set_tensor_address"),
             ("ICudaEngine", "num_io_tensors"), ("Builder", "build_serialized_network"),
             ("OnnxParser", "parse"), ("IBuilderConfig", "progress_monitor"), ("ICudaEngine", "num_layers")}


class Unknown(str):
    """The type of something taken from a TensorRT object that the inference cannot tell."""


class Uses:
    """(owner, name) pairs: ``required`` are read, called or assigned; ``probed`` are feature probes."""

    def __init__(self, tree: ast.Module) -> None:
        self.functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        self.classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        self.parameters: dict[str, dict[str, str]] = {name: {} for name in self.functions}
        self.attributes: dict[str, dict[str, str]] = {name: {} for name in self.classes}
        self.required: set[tuple[str, str]] = set()
        self.probed: set[tuple[str, str]] = set()
        self.untyped: set[str] = set()
        for _ in range(6):  # to a fixed point: types flow between functions and methods
            before = (repr(self.parameters), repr(self.attributes))
            for function in self.functions.values():
                self._scope(function, dict(self.parameters[function.name]), None)
            for name, cls in self.classes.items():
                for method in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
                    passed = self.parameters.get(f"{name}.__init__", {}) if method.name == "__init__" else {}
                    self._scope(method, {"self": f"py:{name}", **passed}, name)
            if (repr(self.parameters), repr(self.attributes)) == before:
                break

    # -- statements -----------------------------------------------------------------------------
    def _scope(self, function: ast.FunctionDef, env: dict[str, str], cls: str | None) -> None:
        for node in self._own_nodes(function):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node is not function:
                for inner in ([node] if isinstance(node, ast.FunctionDef) else
                              [n for n in node.body if isinstance(n, ast.FunctionDef)]):
                    self._scope(inner, dict(env), None)  # closures see the enclosing names
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                kind = self.type_of(node.value, env)
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    self._bind(target, kind, env, cls)
            elif isinstance(node, ast.comprehension):
                element = self.type_of(node.iter, env)
                if element and element.startswith("list:") and isinstance(node.target, ast.Name):
                    env[node.target.id] = element[5:]
        for node in self._own_nodes(function):
            if isinstance(node, ast.expr):
                self.type_of(node, env)

    @staticmethod
    def _own_nodes(function: ast.FunctionDef):
        """The nodes of ``function``, nested definitions themselves but not their bodies."""
        stack = list(ast.iter_child_nodes(function))
        while stack:
            node = stack.pop(0)
            yield node
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                stack.extend(ast.iter_child_nodes(node))

    def _bind(self, target: ast.expr, kind: str | None, env: dict[str, str], cls: str | None) -> None:
        if kind is None:
            return
        if isinstance(target, ast.Name):
            env[target.id] = kind
        elif (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
              and cls is not None):
            self.attributes[cls].setdefault(target.attr, kind)

    # -- expressions ----------------------------------------------------------------------------
    def type_of(self, node: ast.expr, env: dict[str, str]) -> str | None:
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.Attribute):
            return self._attribute(self.type_of(node.value, env), node.attr)
        if isinstance(node, ast.Call):
            return self._call(node, env)
        if isinstance(node, ast.IfExp):
            return self.type_of(node.body, env) or self.type_of(node.orelse, env)
        if isinstance(node, ast.ListComp):
            inner = dict(env)
            for generator in node.generators:
                element = self.type_of(generator.iter, inner)
                if element and element.startswith("list:") and isinstance(generator.target, ast.Name):
                    inner[generator.target.id] = element[5:]
            element = self.type_of(node.elt, inner)
            return f"list:{element}" if element else None
        return None

    def _attribute(self, owner: str | None, name: str, called: bool = False) -> str | None:
        if owner is None or owner.startswith("list:"):
            return None
        if isinstance(owner, Unknown):
            self.untyped.add(f"{owner}.{name}")
            return None
        if owner.startswith("py:"):
            return self.attributes.get(owner[3:], {}).get(name)
        if owner == MODULE:
            self.required.add(("", name))
            return f"class:{name}"
        trt_class = owner.removeprefix("class:")
        self.required.add((trt_class, name))
        if owner.startswith("class:"):
            return None  # an enum member or an unbound method: used, not followed further
        return RETURNS.get((trt_class, name)) or Unknown(f"{trt_class}.{name}{'()' if called else ''}")

    def _call(self, node: ast.Call, env: dict[str, str]) -> str | None:
        func = node.func
        for argument in [*node.args, *(k.value for k in node.keywords)]:
            self.type_of(argument, env)
        if isinstance(func, ast.Name) and func.id in ("hasattr", "getattr") and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant):
            owner = self.type_of(node.args[0], env)
            if owner and not owner.startswith("py:") and not isinstance(owner, Unknown):
                trt_class = "" if owner == MODULE else owner.removeprefix("class:")
                self.probed.add((trt_class, node.args[1].value))
                return RETURNS.get((trt_class, node.args[1].value)) if func.id == "getattr" else None
            return None
        if isinstance(func, ast.Attribute) and func.attr == "module":
            return MODULE  # trt = flavor.module()
        if isinstance(func, ast.Name) and func.id in self.functions:
            self._pass_arguments(func.id, self.functions[func.id], node, env)
            return None
        if isinstance(func, ast.Name) and func.id in self.classes:
            init = next((n for n in self.classes[func.id].body if isinstance(n, ast.FunctionDef)
                         and n.name == "__init__"), None)
            if init is not None:
                self._pass_arguments(f"{func.id}.__init__", init, node, env, skip_self=True)
            return f"py:{func.id}"
        kind = (self._attribute(self.type_of(func.value, env), func.attr, called=True)
                if isinstance(func, ast.Attribute) else self.type_of(func, env))
        return kind[6:] if kind and kind.startswith("class:") else kind  # calling a class makes an instance

    def _pass_arguments(self, key: str, function: ast.FunctionDef, node: ast.Call, env: dict[str, str],
                        skip_self: bool = False) -> None:
        names = [a.arg for a in function.args.args][1 if skip_self else 0:]
        bound = self.parameters.setdefault(key, {})
        passed = list(zip(names, node.args)) + [(k.arg, k.value) for k in node.keywords if k.arg]
        for name, argument in passed:
            kind = self.type_of(argument, env)
            if kind is not None and not isinstance(kind, Unknown):
                bound.setdefault(name, kind)


@pytest.fixture(scope="module")
def uses() -> Uses:
    return Uses(ast.parse(inspect.getsource(backend)))


def test_the_inference_follows_every_tensorrt_object(uses):
    assert uses.untyped == set(), f"attributes of TensorRT objects of unknown type (add to RETURNS): {uses.untyped}"
    assert uses.required >= MUST_FIND, f"no longer found: {MUST_FIND - uses.required}"


def test_every_name_exists_on_the_real_tensorrt_rtx_bindings(uses):
    trt = pytest.importorskip(TENSORRT_RTX.module_name,
                              reason="TensorRT-RTX not installed (pip install 'perfsuite[rtx]')")
    missing = []
    for owner, name in sorted(uses.required | {(owner, "") for owner, _ in uses.probed}):
        target = trt if owner == "" else getattr(trt, owner, None)
        if target is None:
            missing.append(owner)
        elif name and not hasattr(target, name):
            missing.append(f"{owner}.{name}".lstrip("."))
    assert missing == [], f"{trt.__name__} {trt.__version__} lacks {', '.join(missing)}"
    print(f"\n{len(uses.required)} TensorRT names used, {len(uses.probed)} probed; all on {trt.__version__}")


def test_the_inference_is_not_fooled_by_an_unchecked_call():
    """A call whose result type the inference does not know, then used, fails the first test."""
    source = inspect.getsource(backend) + (
        "\n\ndef _new(flavor):\n    trt = flavor.module()\n    builder = trt.Builder(None)\n"
        "    return builder.create_brand_new_thing().some_attribute\n")
    uses = Uses(ast.parse(source))
    assert "Builder.create_brand_new_thing().some_attribute" in uses.untyped
    assert ("Builder", "create_brand_new_thing") in uses.required  # and it is checked against the bindings
