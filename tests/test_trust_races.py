"""Trust and strict scopes under concurrency, and the same-bytes rule of trusted loads, tried for real (issue 19).

Every case loads a pickle whose payload is ``os.system('touch MARKER')`` through AutoGluon's own ``load_pkl.load``
(strict mode patches it): the payload is shown live where trust or strict-off legitimately lets it run, and the
test asserts it never runs anywhere else.  The races run against a real flipping process, with bounded tries.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import http.server
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest
from helpers import stream_payload

import ag_torchfix
from ag_torchfix.load import strict_mode
from ag_torchfix.trust import rules as trust


@pytest.fixture
def load_pkl():
    from autogluon.common.loaders import load_pkl as module

    assert strict_mode.is_applied(), "the package's activation did not patch AutoGluon's load_pkl"
    return module


class Payload:
    """A pickle that runs ``touch MARKER``, and whether it ran."""

    def __init__(self, directory, name):
        directory.mkdir(parents=True, exist_ok=True)
        self.marker = directory / f"RAN-{name}"
        self.path = directory / f"{name}.pkl"
        self.path.write_bytes(stream_payload(self.marker))

    @property
    def ran(self) -> bool:
        return self.marker.exists()


def attempt(load_pkl, path, *, strict: bool | None = True):
    """Load ``path`` with AutoGluon's loader (in strict mode unless ``strict`` is None): "refused" or the object."""
    scope = ag_torchfix.strict() if strict else contextlib.nullcontext()
    with scope, warnings.catch_warnings():
        warnings.simplefilter("ignore", ag_torchfix.TrustedFallbackWarning)
        try:
            return load_pkl.load(str(path))
        except ag_torchfix.SecureLoadError:
            return "refused"


def run_threads(*targets, timeout=60):
    errors = []

    def wrap(target):
        def run():
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors


def test_the_payload_is_live_without_the_package(load_pkl, tmp_path):
    evil = Payload(tmp_path, "evil")
    with ag_torchfix.strict(False):
        load_pkl.load(str(evil.path))
    assert evil.ran
    evil.marker.unlink()
    assert attempt(load_pkl, evil.path) == "refused" and not evil.ran


# --- 1. one manager object shared by threads and tasks ---------------------------------------------------

def test_a_shared_trusted_object_closes_each_threads_own_entry(load_pkl, tmp_path, no_force):
    """Two threads in one ``trusted()`` object; the first to leave must lose trust at once, the other keeps it until
    it leaves.  (Before: the first exit popped the other thread's entry, raised ValueError, and kept its own trust
    open, so its later load ran the payload.)"""
    shared = ag_torchfix.trusted(tmp_path)
    inside, outside, after = Payload(tmp_path, "inside"), Payload(tmp_path, "outside"), Payload(tmp_path, "after")
    both_in, first_left = threading.Barrier(2, timeout=30), threading.Barrier(2, timeout=30)
    results = {}

    def first():
        with shared:
            both_in.wait()
        results["first after its block"] = attempt(load_pkl, outside.path)
        first_left.wait()

    def second():
        with shared:
            both_in.wait()
            first_left.wait()
            results["second inside its block"] = attempt(load_pkl, inside.path)
        results["second after its block"] = attempt(load_pkl, after.path)

    run_threads(first, second)
    assert inside.ran, "trust inside the still-open block must let the payload run (it is live)"
    assert results["first after its block"] == "refused" and not outside.ran
    assert results["second after its block"] == "refused" and not after.ran
    assert trust.trust_source(str(inside.path)) is None


def test_a_shared_trusted_object_closes_each_tasks_own_entry(load_pkl, tmp_path, no_force):
    shared = ag_torchfix.trusted(tmp_path)
    inside, outside = Payload(tmp_path, "inside"), Payload(tmp_path, "outside")
    results = {}

    async def main():
        first_left = asyncio.Event()
        entered = []

        async def first():
            with shared:
                entered.append(1)
                while len(entered) < 2:
                    await asyncio.sleep(0)
            results["first"] = attempt(load_pkl, outside.path)
            first_left.set()

        async def second():
            with shared:
                entered.append(2)
                await first_left.wait()
                results["second"] = attempt(load_pkl, inside.path)

        await asyncio.gather(first(), second())

    asyncio.run(main())
    assert inside.ran and results["second"] != "refused"
    assert results["first"] == "refused" and not outside.ran


def test_a_shared_strict_off_object_does_not_leave_strict_mode_off(load_pkl, tmp_path, monkeypatch):
    """``strict(False)`` shared by two threads under AG_TORCHFIX_STRICT=1: after its own block each thread is strict
    again.  (Before: the first exit raised ValueError and left strict mode off in that thread.)"""
    monkeypatch.setenv("AG_TORCHFIX_STRICT", "1")
    shared = ag_torchfix.strict(False)
    inside, outside = Payload(tmp_path, "inside"), Payload(tmp_path, "outside")
    both_in, first_left = threading.Barrier(2, timeout=30), threading.Barrier(2, timeout=30)
    results = {}

    def first():
        with shared:
            both_in.wait()
        results["first"] = attempt(load_pkl, outside.path, strict=None)
        results["first strict"] = strict_mode.is_active()
        first_left.wait()

    def second():
        with shared:
            both_in.wait()
            first_left.wait()
            attempt(load_pkl, inside.path, strict=None)  # strict off inside: the payload is live
        results["second strict"] = strict_mode.is_active()

    run_threads(first, second)
    assert inside.ran
    assert results["first"] == "refused" and not outside.ran
    assert results["first strict"] and results["second strict"]


def test_a_generator_resumed_in_another_thread_closes_its_own_entry(load_pkl, tmp_path, no_force):
    shared = ag_torchfix.trusted(tmp_path)
    outside = Payload(tmp_path, "outside")

    def generator():
        with shared:
            yield

    suspended = generator()
    next(suspended)  # entered here, in this thread's context
    run_threads(lambda: list(suspended))  # left in another thread
    assert attempt(load_pkl, outside.path) == "refused" and not outside.ran


def test_generators_interleaved_in_one_context_each_close_their_own_block(tmp_path, no_force):
    shared = ag_torchfix.strict(False)
    with ag_torchfix.strict():
        def generator():
            with shared:
                yield

        first = generator()
        next(first)
        assert not strict_mode.is_active()
        with shared:
            with contextlib.suppress(StopIteration):
                next(first)  # the generator leaves its block while the caller's block is open
            assert not strict_mode.is_active()
        assert strict_mode.is_active()


def test_an_exit_stack_enters_and_closes_a_shared_manager(tmp_path, no_force):
    shared = ag_torchfix.trusted(tmp_path)
    with contextlib.ExitStack() as stack:
        stack.enter_context(shared)
        stack.enter_context(shared)
        assert trust.trust_source(str(tmp_path / "x")) is not None
    assert trust.trust_source(str(tmp_path / "x")) is None


def test_copies_of_the_context_keep_strict_on_and_lose_strict_off(monkeypatch):
    import contextvars

    with ag_torchfix.strict():
        strict_copy = contextvars.copy_context()
    assert not strict_mode.is_active() and strict_copy.run(strict_mode.is_active)  # leaving never weakens a copy
    monkeypatch.setenv("AG_TORCHFIX_STRICT", "1")
    with ag_torchfix.strict(False):
        off_copy = contextvars.copy_context()
        assert off_copy.run(strict_mode.is_active) is False
    assert off_copy.run(strict_mode.is_active) is True  # the closed "off" entry counts nowhere


# --- 2. trusted loads unpickle the bytes trust was decided on ----------------------------------------------

FLIPPER = textwrap.dedent("""
    import os, sys, time
    link, tmp, targets, deadline = sys.argv[1], sys.argv[2], sys.argv[3:], time.time() + 120
    i = 0
    while time.time() < deadline:
        i += 1
        try:
            os.symlink(targets[i % len(targets)], tmp)
            os.replace(tmp, link)
        except FileExistsError:
            os.unlink(tmp)
""")


@contextlib.contextmanager
def flipping(link, *targets):
    """A real process re-pointing ``link`` between ``targets`` as fast as it can (each flip an atomic rename of a
    new link made beside ``targets[0]``, outside the directory under test)."""
    os.symlink(targets[0], link)
    scratch = os.path.join(os.path.dirname(targets[0]), ".flip")
    proc = subprocess.Popen([sys.executable, "-c", FLIPPER, str(link), scratch, *map(str, targets)])
    try:
        time.sleep(0.2)
        yield
    finally:
        proc.kill()
        proc.wait()


def test_location_trust_in_strict_mode_never_reopens_a_flipping_link(load_pkl, tmp_path, no_force):
    """``trusted/model.pkl`` flips between a harmless file strict mode refuses (so the trusted fallback is used) and
    an attacker's payload outside the trusted directory.  Before: the trust decision was made on the harmless
    file, then AutoGluon's loader opened the link again (won in ~240 tries)."""
    trusted_dir = tmp_path / "trusted"
    trusted_dir.mkdir()
    benign = trusted_dir / "benign.pkl"
    benign.write_bytes(pickle.dumps({"counter": collections.Counter}, protocol=4))  # refused by strict, harmless
    evil = Payload(tmp_path / "attacker", "evil")
    link = trusted_dir / "model.pkl"
    seen = collections.Counter()
    with flipping(link, benign, evil.path), ag_torchfix.trusted(trusted_dir):
        deadline = time.monotonic() + 10
        for _ in range(3000):
            result = attempt(load_pkl, link)
            seen["refused" if result == "refused" else "trusted fallback"] += 1
            if evil.ran or time.monotonic() > deadline:
                break
    assert not evil.ran, f"the payload ran after {sum(seen.values())} tries"
    assert seen["refused"] and seen["trusted fallback"], f"the race was not exercised: {dict(seen)}"


def test_an_s3_pickle_is_downloaded_once_and_those_bytes_are_unpickled(load_pkl, tmp_path, monkeypatch, no_force):
    """The S3 object is swapped after the first download: a second download (before: AutoGluon's own loader after
    the trust decision) would unpickle the attacker's bytes.  S3 is an in-process stand-in for boto3's resource."""
    boto3 = pytest.importorskip("boto3")
    evil = Payload(tmp_path, "evil")
    versions = [pickle.dumps({"counter": collections.Counter}, protocol=4), evil.path.read_bytes()]
    downloads = []

    class Object:
        def __init__(self, key):
            self.key = key

        def get(self):
            downloads.append(self.key)
            import io

            return {"Body": io.BytesIO(versions[min(len(downloads) - 1, 1)])}

    class Bucket:
        def __init__(self, name):
            self.name = name

        def Object(self, key):  # noqa: N802 - boto3's spelling
            return Object(key)

    class Resource:
        def Bucket(self, name):  # noqa: N802
            return Bucket(name)

    monkeypatch.setattr(boto3, "resource", lambda name, *a, **k: Resource())
    with ag_torchfix.trusted("s3://bucket/models"):
        result = attempt(load_pkl, "s3://bucket/models/p/model.pkl")
    assert result == {"counter": collections.Counter} and downloads == ["models/p/model.pkl"]
    assert not evil.ran
    downloads.clear()
    assert attempt(load_pkl, "s3://bucket/models/p/model.pkl") == "refused" and not evil.ran  # untrusted: refused


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


@contextlib.contextmanager
def serving(respond, monkeypatch):
    """A local HTTP server calling ``respond(handler)`` for each GET; yields its base URL.  AutoGluon's URL loading
    is allowed (AG_ALLOW_PICKLE_FROM_URL), proxies bypassed."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            respond(self)

        def log_message(self, *args):
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AG_ALLOW_PICKLE_FROM_URL", "True")
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def send(handler, status: int, body: bytes = b"", **headers) -> None:
    handler.send_response(status)
    for name, value in {"Content-Length": str(len(body)), **headers}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def test_a_url_pickle_is_fetched_once_after_trust_and_never_when_untrusted(load_pkl, tmp_path, monkeypatch, no_force):
    if not hasattr(load_pkl, "_is_web_url"):
        pytest.skip("this AutoGluon reads no pickles from URLs")
    evil = Payload(tmp_path, "evil")
    bodies = [pickle.dumps({"counter": collections.Counter}, protocol=4), evil.path.read_bytes()]
    requests_seen = []

    def respond(handler):
        requests_seen.append(handler.path)
        send(handler, 200, bodies[min(len(requests_seen) - 1, 1)])

    with serving(respond, monkeypatch) as base:
        url = f"{base}/p/model.pkl"
        assert attempt(load_pkl, url) == "refused" and requests_seen == []  # untrusted: not even fetched
        with ag_torchfix.trusted(url.rsplit("/", 2)[0]):
            assert attempt(load_pkl, url) == {"counter": collections.Counter}
    assert requests_seen == ["/p/model.pkl"] and not evil.ran


# --- 3. verify reads the lock once, through the regular-file opener ------------------------------------------

def verify(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "ag_torchfix", "verify", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def locked_dir(tmp_path):
    from ag_torchfix.trust import lock

    directory = tmp_path / "predictor"
    (directory / "models").mkdir(parents=True)
    (directory / "learner.pkl").write_bytes(pickle.dumps({"a": 1}))
    (directory / "models" / "model.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    _, digest, _ = lock.write(str(directory))
    return directory, digest


def test_verify_refuses_a_fifo_lock_without_hanging(locked_dir):
    directory, _ = locked_dir
    (directory / "ag_torchfix.lock").unlink()
    os.mkfifo(directory / "ag_torchfix.lock")
    out = verify(directory, timeout=30)
    assert out.returncode == 3 and "not a regular file" in out.stdout, out.stdout + out.stderr
    out = verify("--json", directory, timeout=30)
    assert out.returncode == 3 and json.loads(out.stdout)["exit_code"] == 3


def test_verify_never_reports_the_genuine_digest_for_a_swapped_lock(locked_dir, tmp_path):
    """The attacker tampers with a file and flips the lock between the genuine one and one listing the tampered
    file.  Before: verify hashed one read (the genuine digest) and checked the list of another (exit 0)."""
    from ag_torchfix.trust import lock

    directory, genuine_digest = locked_dir
    lock_path = directory / "ag_torchfix.lock"
    genuine = tmp_path / "genuine.lock"
    shutil.copy(lock_path, genuine)
    (directory / "learner.pkl").write_bytes(stream_payload(tmp_path / "RAN"))
    forged = tmp_path / "forged.lock"
    forged.write_bytes(lock.encode(lock.build(str(directory))))
    forged_digest = "sha256:" + hashlib.sha256(forged.read_bytes()).hexdigest()
    lock_path.unlink()
    outcomes = collections.Counter()
    with flipping(lock_path, genuine, forged):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(outcomes.values()) < 40:
            result = lock.verify(str(directory))  # in-process: many tries within the bound
            outcomes[(result.ok, result.digest)] += 1
    assert (True, genuine_digest) not in outcomes, outcomes
    assert (False, genuine_digest) in outcomes and (True, forged_digest) in outcomes, outcomes
    out = verify("--expect", genuine_digest, directory)  # whichever lock it reads now, not a match
    assert out.returncode == 2


def test_verify_expect_names_the_trusted_digest(locked_dir):
    directory, digest = locked_dir
    assert verify("--expect", digest, directory).returncode == 0
    (directory / "ag_torchfix.lock").write_bytes((directory / "ag_torchfix.lock").read_bytes() + b" ")
    out = verify("--expect", digest, directory)
    assert out.returncode == 2 and "not the expected" in out.stdout, out.stdout


@pytest.mark.parametrize("content", [b"[" * 200_000 + b"]" * 200_000, b"\xff\xfe", b"{}", b"x" * ((16 << 20) + 1)])
def test_verify_of_a_malformed_lock_is_a_clean_exit_3(locked_dir, content):
    directory, _ = locked_dir
    (directory / "ag_torchfix.lock").write_bytes(content)
    out = verify(directory)
    assert out.returncode == 3 and "Traceback" not in out.stderr, out.stdout + out.stderr


# --- red team of this change (helper-11): each kept as a test -----------------------------------------------

INODE_RACER = textwrap.dedent(r"""
    import ctypes, os, sys
    att, T, swaps = sys.argv[1], sys.argv[2], sys.argv[3]
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init()
    libc.inotify_add_watch(fd, att.encode(), 0x10)  # IN_CLOSE_NOWRITE: the loader closed the attacker's file
    n = 0
    while True:
        os.read(fd, 4096)
        p = os.path.join(att, "model.pkl")
        try:
            if os.path.islink(p):
                continue
            ino = os.stat(p).st_ino
            os.unlink(p)                                   # its inode is free again
            n += 1
            new = os.path.join(T, f"ckpt-{n}")
            with open(new, "wb") as fh:                    # a legitimate writer in the trusted tree gets that inode
                fh.write(b"checkpoint")
            if os.stat(new).st_ino == ino:
                os.symlink(new, p)                         # the attacker's path now resolves into T, same inode
                with open(swaps, "a") as fh:
                    fh.write("swap\n")
        except OSError:
            pass
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
def test_a_freed_inode_reused_in_the_trusted_tree_never_vouches_for_the_attackers_bytes(load_pkl, tmp_path, no_force):
    """Strict mode used to close the file before deciding trust: the attacker's inode, freed on close, was handed
    to a new file in the trusted directory, the attacker's path re-pointed at it, and the (dev, inode) check passed
    for bytes read from outside (LIVE on the first try).  The file now stays open until trust is decided."""
    trusted_dir, attacker = tmp_path / "T", tmp_path / "att"
    trusted_dir.mkdir()
    attacker.mkdir()
    swaps = tmp_path / "swaps"
    racer = subprocess.Popen([sys.executable, "-c", INODE_RACER, str(attacker), str(trusted_dir), str(swaps)])
    evil = Payload(tmp_path / "payloads", "evil")
    target = attacker / "model.pkl"
    try:
        time.sleep(0.3)
        with ag_torchfix.trusted(trusted_dir):
            for _ in range(60):
                if os.path.lexists(target):
                    target.unlink()
                target.write_bytes(evil.path.read_bytes())
                assert attempt(load_pkl, target) == "refused"
                time.sleep(0.01)
                assert not evil.ran
    finally:
        racer.kill()
        racer.wait()
    assert not evil.ran


def test_a_generator_finished_inside_another_threads_block_closes_its_own_entry(load_pkl, tmp_path, no_force):
    """Thread B, inside its own ``with shared:``, finishes a generator that entered ``shared`` in this thread: the
    generator's entry must close (before: B's did, and this thread stayed trusted outside any block)."""
    shared = ag_torchfix.trusted(tmp_path)
    evil = Payload(tmp_path, "evil")
    finished, checked = threading.Event(), threading.Event()
    seen = {}

    def generator():
        with shared:
            yield

    suspended = generator()
    next(suspended)

    def other():
        with shared:
            next(suspended, None)
            finished.set()
            checked.wait(30)
            seen["other still trusted"] = trust.trust_source(str(evil.path)) is not None

    thread = threading.Thread(target=other)
    thread.start()
    assert finished.wait(30)
    assert trust.trust_source(str(evil.path)) is None
    result = attempt(load_pkl, evil.path)
    checked.set()
    thread.join(30)
    assert result == "refused" and not evil.ran
    assert seen["other still trusted"]  # and B's own block was left open


@pytest.mark.parametrize("url_path", ["/models/../uploads/model.pkl", "/models/%2e%2e/uploads/model.pkl",
                                      "/models\\..\\uploads/model.pkl"])
def test_a_trusted_url_prefix_covers_what_the_server_is_asked_for(url_path, tmp_path, monkeypatch):
    """``trusted("http://h/models")`` judged the raw string; requests removes dot segments before sending, so
    ``/models/../uploads/x`` fetched ``/uploads/x`` (LIVE before)."""
    with ag_torchfix.trusted("http://h/models"):
        assert trust.trust_source("http://h" + url_path) is None
        assert trust.trust_source("http://h/models/p/model.pkl") is not None


def test_a_trusted_url_that_redirects_is_not_followed(load_pkl, tmp_path, monkeypatch, no_force):
    if not hasattr(load_pkl, "_is_web_url"):
        pytest.skip("this AutoGluon reads no pickles from URLs")
    evil = Payload(tmp_path, "evil")
    served = []

    def respond(handler):
        served.append(handler.path)
        if handler.path.startswith("/models/"):
            send(handler, 302, Location="/elsewhere/model.pkl")
        else:
            send(handler, 200, evil.path.read_bytes())

    with serving(respond, monkeypatch) as base:
        with ag_torchfix.trusted(base + "/models"):
            assert attempt(load_pkl, base + "/models/model.pkl") == "refused"
    assert served == ["/models/model.pkl"] and not evil.ran


LOCK_RACER = textwrap.dedent("""
    import os, sys, time
    d, victim, end = sys.argv[1], sys.argv[2], time.time() + 60
    while time.time() < end:
        for n in os.listdir(d):
            if n.startswith("ag_torchfix.lock.") and n.endswith(".tmp"):
                try:
                    os.rename(os.path.join(d, n), os.path.join(d, n + ".x"))
                    os.symlink(victim, os.path.join(d, n))
                except OSError:
                    pass
""")


def test_lock_never_changes_the_mode_of_a_file_linked_under_its_temporary_name(locked_dir, tmp_path):
    """A racer replaces lock's temporary file by a link to a private file: the mode is set on the descriptor, so
    the private file stays 0600 (before: ``os.chmod`` by name made it 0644 within ~50 runs)."""
    import stat

    from ag_torchfix.trust import lock

    directory, _ = locked_dir
    (directory / "ag_torchfix.lock").unlink()
    secret = tmp_path / "secret"
    secret.write_text("private key")
    secret.chmod(0o600)
    racer = subprocess.Popen([sys.executable, "-c", LOCK_RACER, str(directory), str(secret)])
    try:
        time.sleep(0.2)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for leftover in directory.iterdir():
                with contextlib.suppress(FileNotFoundError):  # the racer renames under our feet
                    if leftover.is_symlink() or leftover.name.endswith(".x"):
                        leftover.unlink()
            with contextlib.suppress(Exception):
                lock.write(str(directory))
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    finally:
        racer.kill()
        racer.wait()


def test_verify_compares_sizes_before_hashing_a_huge_sparse_file(locked_dir):
    directory, _ = locked_dir
    with open(directory / "learner.pkl", "r+b") as fh:
        fh.truncate(1 << 42)  # 4 TiB, sparse: hashing it would take hours
    started = time.monotonic()
    out = verify(directory, timeout=60)
    assert out.returncode == 2 and "not hashed" in out.stdout, out.stdout
    assert time.monotonic() - started < 30


def test_verify_escapes_what_the_lock_says(locked_dir):
    directory, _ = locked_dir
    doc = json.loads((directory / "ag_torchfix.lock").read_text())
    doc["files"]["learner.pkl"]["sha256"] = "\x1b[2J\x1b[8mhidden"
    (directory / "ag_torchfix.lock").write_text(json.dumps(doc))
    out = verify(directory)
    assert out.returncode == 2 and "\x1b" not in out.stdout, repr(out.stdout)
