"""Counting the host-side torch ops of a fused call (what bench/activations.py --host-ops and
tests/search_space/test_kernels_interpret.py measure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class HostOpCounter:
    """Counts the aten ops a fused call dispatches besides its Triton launches (host cost).

    A TorchDispatchMode sees every op below autograd (views, allocations, reductions, the
    autograd engine's own ops); the launches are excluded by wrapping the kernels' `run` (under
    the interpreter they copy tensors around, which a GPU launch does not). With
    `stub_launches` the kernels are not run at all, so the count (and host timing) works on any
    device, interpreter or not. Use as a context manager around `count` calls.
    """

    def __init__(self, stub_launches: bool = False) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(
                self,
                func: Any,
                types: Any,
                args: tuple[Any, ...] = (),
                kwargs: dict[str, Any] | None = None,
            ) -> Any:
                if counter.paused == 0:
                    counter.ops.append(str(func.overloadpacket.__name__))
                return func(*args, **(kwargs or {}))

        self.mode_cls = Mode
        self.ops: list[str] = []
        self.launches = 0
        self.paused = 0
        self.stub = stub_launches
        self._saved: list[tuple[Any, Any]] = []

    def __enter__(self) -> HostOpCounter:
        from search_space.kernels import _triton

        for kernel in (_triton.act_fwd_kernel, _triton.act_bwd_kernel, _triton.act_bwd_loop_kernel):
            real = kernel.run
            self._saved.append((kernel, real))
            kernel.run = self._wrap(real)
        return self

    def __exit__(self, *exc: object) -> None:
        for kernel, _real in self._saved:
            del kernel.run  # the class's method again
        self._saved.clear()

    def _wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            self.launches += 1
            if self.stub:
                return None
            self.paused += 1
            try:
                return real(*args, **kwargs)
            finally:
                self.paused -= 1

        return run

    def count(self, fn: Callable[[], Any]) -> tuple[Any, list[str], int]:
        """(fn's result, aten ops it dispatched, Triton launches)."""
        self.ops, self.launches = [], 0
        with self.mode_cls():
            out = fn()
        return out, list(self.ops), self.launches
