"""CPU priority of the agent's bulk threads: inference below the event loop.

On a 2-core gateway whose cameras want more inference than the cores give, the event loop's thread (rules,
PLC writes, alarms, OPC UA keep-alives, heartbeats, the outbox's hand-over) competed with the inference
threads on equal terms: the kernel shared the cores among them all, so a rule's trip waited its turn behind
frames. Threads that run models, their pre- and postprocessing (the pipelines' pool) and the threads the
engines start for themselves (ONNX Runtime's intra-op pool, OpenVINO's streams: they inherit the priority of
the thread that creates the session, so sessions are created in a lowered thread too) run ``INFERENCE_NICE``
steps nicer than the thread that started them. Inference still takes every cycle the loop leaves idle; it
only yields when the loop has work. Linux sets niceness per thread (``setpriority`` on the thread id);
raising one's own niceness needs no privilege (lowering it back would, so it is done only in threads made
for it). Elsewhere, or where it is refused, the thread runs as before.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

# 5 steps: the loop's thread gets ~3x an inference thread's share of a core while both want one (the
# kernel's weights 1024 against 335), and inference still gets a share against the gateway's other services
INFERENCE_NICE = 5

T = TypeVar("T")


def thread_nice(tid: int | None = None) -> int | None:
    """The niceness of thread ``tid`` (this one by default), or None where it cannot be read."""
    try:
        return os.getpriority(os.PRIO_PROCESS, tid if tid is not None else threading.get_native_id())
    except (OSError, AttributeError):
        return None


def lower_this_thread(by: int = INFERENCE_NICE) -> bool:
    """Make the calling thread ``by`` steps nicer than the process's main thread (the event loop's), at most
    19; a thread already that nice (made by a lowered one: it inherited it) is left as it is. True when the
    thread is lowered. The inference pools' initializer, and run before a model's session is created (the
    engine's own threads inherit it)."""
    nice, main = thread_nice(), thread_nice(os.getpid())  # the main thread's id is the process id
    if nice is None or main is None:
        return False
    want = min(19, main + by)
    if nice >= want:
        return True
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), want)
    except OSError as exc:  # a container's seccomp profile, say: serve at the loop's priority
        log.debug("cannot lower the priority of thread %s: %s", threading.current_thread().name, exc)
        return False
    return True


async def in_lowered_thread(fn: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread(fn, *args)``, in a new thread made nicer first (it is not a pool's: a lowered
    thread is never given back to work that should run at the loop's priority). For loading a model: the
    threads its engine starts inherit the lowered priority."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():  # the awaiting task may have been cancelled meanwhile
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def run() -> None:
        lower_this_thread()
        outcome: tuple[bool, Any]
        try:
            outcome = (True, fn(*args))
        except BaseException as exc:  # handed to the awaiting task, as to_thread does
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop closed meanwhile: nobody waits for it
            pass

    threading.Thread(target=run, name=f"load-{getattr(fn, '__name__', 'fn')}", daemon=True).start()
    return await fut


def opencv_in_calling_threads() -> None:
    """Set OpenCV to one thread for the process: each of its calls runs in the thread that makes it.

    OpenCV hands a call on many pixels (a colour conversion of a frame, a resize to more than 65,536 pixels:
    a 320-px model's input, a camera's ``width``/``height``) to its worker thread, which then spins waiting for
    more: 0.6-0.9 ms of CPU after each call (2-core AMD EPYC, 2026-12-05), a third busy thread beside the
    engine and the camera or the UNSURE check. On one thread the same pixels (each is computed alike); a
    640x480 frame into a 320-px model costs the process 0.56-0.73 ms less CPU, its ``slot.infer`` as long.
    A 5-MP frame's resize by area to 320 px, which the worker halved (9 of ~18 ms), took 1.3-1.7 ms longer
    in the agent (its camera decoding the next frame on the other core): within the run-to-run noise
    (``bench/RESULTS.md``, "OpenCV's worker threads")."""
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
