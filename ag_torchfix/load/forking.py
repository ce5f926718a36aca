"""A forked sandbox for native code that may crash or hang on checked-but-unvalidated state: native's CatBoost probe
and native_sandbox's predictions."""

from __future__ import annotations

import os
import time


def _vm_size() -> int | None:
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
    except (OSError, StopIteration, ValueError):
        return None


def fork_run(child, timeout: float, *, memory: int | None = None, max_output: int = 4000):
    """Run ``child(write_fd) -> exit code`` in a forked copy of this process; the sandbox of ``native``'s CatBoost probe and
    of ``native_sandbox``.

    The child dies of the signal that hits it (no faulthandler, no host crash handler), writes nothing to the
    parent's stdout/stderr, gets ``RLIMIT_CPU`` of ``timeout`` + 2 s and, with ``memory``, ``RLIMIT_AS`` of its
    current address space plus ``memory`` bytes, and leaves with ``os._exit``.  The parent reads what the child
    writes to the pipe as it comes (at most ``max_output`` bytes), and kills it at the deadline.

    Returns ``(status, value, output)``: ``("exit", code, bytes)``, ``("signal", signum, bytes)``,
    ``("timeout", 0, b"")``, ``("too-large", 0, b"")`` or ``("error", 0, message bytes)``.
    """
    import select
    import warnings

    read_fd, write_fd = os.pipe()
    try:
        with warnings.catch_warnings():  # Python >= 3.12 warns about fork() in a threaded process
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        return "error", 0, f"could not fork a sandbox: {exc}".encode()
    if pid == 0:  # child: never returns
        code = 70
        try:
            import faulthandler
            import signal
            faulthandler.disable()  # a crash here is the expected verdict, not a report for the parent's stderr
            for name in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT"):  # nor for a host's crash handler
                if hasattr(signal, name):            # (a fuzzer's, a service's): the child simply dies
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
            os.close(read_fd)
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            try:
                import resource
                resource.setrlimit(resource.RLIMIT_CPU, (int(timeout) + 2, int(timeout) + 2))
                vm = _vm_size() if memory is not None else None
                if vm is not None:
                    resource.setrlimit(resource.RLIMIT_AS, (vm + memory, vm + memory))
            except Exception:  # noqa: BLE001
                pass
            code = child(write_fd)
        finally:
            os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    received = 0
    status = None
    eof = False
    try:
        while True:
            if not eof:
                ready, _, _ = select.select([read_fd], [], [], max(0.0, min(0.02, deadline - time.monotonic())))
                if ready:
                    chunk = os.read(read_fd, 1 << 20)
                    if not chunk:
                        eof = True
                    else:
                        received += len(chunk)
                        if received > max_output:
                            os.kill(pid, 9)
                            os.waitpid(pid, 0)
                            return "too-large", 0, b""
                        chunks.append(chunk)
                        continue
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # SIGCHLD ignored by the application: no status to judge by
                return "error", 0, b"the sandbox's exit status could not be read"
            if done:
                if not eof:   # what the child wrote before it exited
                    os.set_blocking(read_fd, False)
                    while received <= max_output:
                        try:
                            chunk = os.read(read_fd, 1 << 20)
                        except BlockingIOError:
                            break
                        if not chunk:
                            break
                        received += len(chunk)
                        chunks.append(chunk)
                    if received > max_output:
                        return "too-large", 0, b""
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                return "timeout", 0, b""
            if eof:
                time.sleep(0.0005)
    finally:
        os.close(read_fd)
    output = b"".join(chunks)
    if os.WIFSIGNALED(status):
        return "signal", os.WTERMSIG(status), output
    return "exit", os.WEXITSTATUS(status), output


def signal_name(number: int) -> str:
    import signal
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
