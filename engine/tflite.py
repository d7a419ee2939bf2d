"""LiteRT (TensorFlow Lite) runner for the starter .tflite models: single-threaded interpreters, one per concurrent run.

The model bytes are read and checked against their pin once; every interpreter is built from
those bytes (the file is never read again after verification). LiteRT interpreters are not
thread-safe, so a run takes an idle interpreter from the model's pool (a new one only when every
one is busy) and gives it back: a video job's threads reuse the interpreter built at load time
instead of building one each (about 8 ms of CPU apiece). The models are small (1-3 ms a run).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np

from sealfuse.engine.errors import ModelDigestMismatchError, ModelSignatureError

__all__ = ["TFLiteModel"]


class TFLiteModel:
    """A verified .tflite model: `run(x)` returns its outputs in the model's output order."""

    def __init__(self, name: str, path: Path, content: bytes, expected_sha256: str,
                 input_shape: tuple[int, ...], outputs: int) -> None:
        actual = hashlib.sha256(content).hexdigest()
        if actual != expected_sha256:
            raise ModelDigestMismatchError(
                f"model file {path} fails its sha256 pin: expected {expected_sha256}, got {actual}. "
                f"The file was left in place; replace it with the pinned file",
                model=name, file=path, expected=expected_sha256, actual=actual)
        self.name, self.path = name, Path(path)
        self._content = content
        self._lock = threading.Lock()
        self._idle: list[tuple[Any, int, list[int]]] = []
        first = self._new()
        self._idle.append(first)
        interp = first[0]
        inputs, outs = interp.get_input_details(), interp.get_output_details()
        got = tuple(int(v) for v in inputs[0]["shape"]) if len(inputs) == 1 else ()
        if len(inputs) != 1 or got != tuple(input_shape) or len(outs) != outputs:
            raise ModelSignatureError(
                f"model {path} does not have the expected signature: {len(inputs)} input(s) "
                f"{[list(map(int, i['shape'])) for i in inputs]}, {len(outs)} output(s); expected one input "
                f"{list(input_shape)} and {outputs} outputs", model=name, file=path)
        self.input_shape = got

    def _new(self) -> tuple[Any, int, list[int]]:
        """A new interpreter with its input index and output indices."""
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # the engine extra installs it
            raise ModelSignatureError(
                f"model {self.path} needs the LiteRT runtime (pip package ai-edge-litert), which is "
                f"not installed", model=self.name, file=self.path) from exc
        try:
            interp = Interpreter(model_content=self._content, num_threads=1)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelSignatureError(f"model {self.path} cannot be loaded by LiteRT: {exc}",
                                      model=self.name, file=self.path) from exc
        return interp, interp.get_input_details()[0]["index"], [d["index"] for d in interp.get_output_details()]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run on one float32 input of `input_shape`; returns copies of every output (thread-safe)."""
        with self._lock:
            slot = self._idle.pop() if self._idle else None
        if slot is None:
            slot = self._new()
        interp, inp, outs = slot
        try:
            interp.set_tensor(inp, np.ascontiguousarray(x, np.float32))
            interp.invoke()
            return [interp.get_tensor(i).copy() for i in outs]
        finally:
            with self._lock:
                self._idle.append(slot)
