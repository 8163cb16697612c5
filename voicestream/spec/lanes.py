"""Execution lanes: where a model's work runs so draft and target can overlap.

On CUDA each lane owns a ``torch.cuda.Stream``; hand-offs between lanes are ordered
with CUDA events (the consumer's stream waits on the producer's event, and tensors that
cross streams are marked with ``record_stream`` so the caching allocator does not reuse
their memory early). On CPU a lane is a worker thread: torch releases the GIL inside its
kernels, so the draft's forwards run while the target's do.
"""
from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator

import torch


class Lane:
    def __init__(self, name: str, device: torch.device, *, thread: bool, cpu_threads: int | None = None) -> None:
        self.name = name
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._cpu_threads = cpu_threads
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix=f"voicestream-{name}", initializer=self._init_thread)
            if thread
            else None
        )

    def _init_thread(self) -> None:
        if self._cpu_threads is not None and self.device.type == "cpu":
            torch.set_num_threads(self._cpu_threads)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Run the body on this lane's stream (CUDA) with autograd off."""
        stream_ctx = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with torch.inference_mode(), stream_ctx:
            yield

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        if self._pool is None:
            raise RuntimeError(f"lane {self.name!r} has no worker thread")
        return self._pool.submit(self._call, fn, args, kwargs)

    def _call(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        with self.active():
            return fn(*args, **kwargs)

    def mark(self) -> "torch.cuda.Event | None":
        """An event after all work queued so far on this lane (None on CPU)."""
        if self.stream is None:
            return None
        event = torch.cuda.Event()
        event.record(self.stream)
        return event

    def wait(self, event: "torch.cuda.Event | None", *tensors: torch.Tensor | None) -> None:
        """Order this lane after ``event`` and adopt ``tensors`` produced on another stream."""
        if self.stream is None or event is None:
            return
        self.stream.wait_event(event)
        for t in tensors:
            if t is not None and t.is_cuda:
                t.record_stream(self.stream)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
