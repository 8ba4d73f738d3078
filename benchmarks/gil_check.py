#!/usr/bin/env python3
"""Does a password verification in a worker thread stall the reactor thread?

    python benchmarks/gil_check.py [SCHEME ...]

popframe verifies passwords in a thread pool so the reactor stays
responsive.  That only helps if the C code behind a scheme releases the GIL.
For each scheme this loops ``popframe.auth.schemes.verify_password`` in one
thread while the main thread (standing in for the reactor) sleeps 1 ms at a
time, and reports how late it wakes up: with the GIL released the lateness
stays near what an idle machine shows; a scheme that holds the GIL makes the
"reactor" wait for the whole hash on each wake-up (worse than a pure-Python
loop, which the interpreter interrupts every 5 ms switch interval).  A ctypes call of
libcrypt's crypt_r (ctypes drops the GIL around foreign calls) is measured
beside it for comparison.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from popframe.auth.schemes import make_hash, verify_password  # noqa: E402

#: The expensive schemes (the cheap ones are microseconds: not worth a thread).
SCHEMES = ["SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2ID"]


def lateness(work, wakeups: int = 300) -> str:
    stop = threading.Event()
    done = [0]

    def loop() -> None:
        while not stop.is_set():
            work()
            done[0] += 1

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    time.sleep(0.05)
    late = []
    for _ in range(wakeups):
        t0 = time.perf_counter()
        time.sleep(0.001)
        late.append(time.perf_counter() - t0 - 0.001)
    stop.set()
    t.join(timeout=10)
    late.sort()
    q = lambda p: late[min(len(late) - 1, int(p * len(late)))] * 1e3  # noqa: E731
    return f"wake-up late p50 {q(0.5):6.2f} ms  p90 {q(0.9):6.2f} ms  max {late[-1] * 1e3:6.1f} ms"


def ctypes_crypt():
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt_r.restype = ctypes.c_char_p
    lib.crypt_r.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    stored = make_hash("SHA512-CRYPT", b"secret").partition("}")[2].encode()

    def verify() -> bool:
        data = ctypes.create_string_buffer(32768)  # >= sizeof(struct crypt_data) in libxcrypt
        return lib.crypt_r(b"secret", stored, data) == stored

    assert verify()
    return verify


def main() -> None:
    schemes = sys.argv[1:] or SCHEMES
    print(f"{'nothing (baseline)':30} {lateness(lambda: time.sleep(0.005))}")

    def spin() -> None:
        end = time.perf_counter() + 0.003
        while time.perf_counter() < end:
            pass

    # Python code holding the GIL: the interpreter hands it over every
    # switch interval (5 ms), so this is the worst a well-behaved thread does.
    print(f"{'pure-Python 3 ms loop':30} {lateness(spin)}")
    for scheme in schemes:
        stored = make_hash(scheme, b"secret")
        assert verify_password(stored, b"secret")
        print(f"{scheme + ' (popframe)':30} {lateness(functools.partial(verify_password, stored, b'secret'))}")
    if "SHA512-CRYPT" in schemes:
        print(f"{'SHA512-CRYPT (ctypes crypt_r)':30} {lateness(ctypes_crypt())}")


if __name__ == "__main__":
    main()
