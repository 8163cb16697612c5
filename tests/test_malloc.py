"""keep_freed_memory: large activations come from the heap and are reused step after step,
instead of being mapped, unmapped and faulted in again every step."""
import json
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, json, resource, sys, torch
from voicestream.malloc import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
tuned = keep_freed_memory() if sys.argv[1] == "1" else False
x = torch.ones(1)
faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
mapped, heap = [], []
for _ in range(50):  # 50 'steps', each allocating, touching and freeing 48 MiB and 12 MiB activations
    mapped_before = libc.mallinfo2().hblkhd  # per step: other blocks mapped or unmapped meanwhile do not count
    a = torch.empty(12 * 2**20).fill_(1.0)
    b = torch.empty(3 * 2**20).fill_(2.0)
    mapped.append(libc.mallinfo2().hblkhd - mapped_before)
    x = x + a[:1] + b[:1]
    del a, b
    heap.append(libc.mallinfo2().arena)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
print(json.dumps({"tuned": tuned, "mapped": mapped, "heap": heap, "faults": faults}))
"""


def _probe(tune: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, "1" if tune else "0"], capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_large_activations_come_from_the_heap_and_are_reused():
    try:
        plain, tuned = _probe(False), _probe(True)
    except subprocess.CalledProcessError as e:  # no mallinfo2: not glibc >= 2.33
        pytest.skip(f"no glibc mallinfo2: {e.stderr[-200:]}")
    assert tuned["tuned"] is True
    big = 48 * 2**20
    assert plain["mapped"][0] >= big  # untuned, glibc maps a block this big (later steps vary with its heap)
    assert all(m == 0 for m in tuned["mapped"])  # tuned: served from the heap
    # ... the same heap, reused: over 45 more steps of 60 MiB each it grows by a block at most
    # (once, fresh-clone CI under load saw one extra 48 MiB block; growing every step would be 2.7 GB)
    assert tuned["heap"][5] >= big and tuned["heap"][-1] <= tuned["heap"][5] + 2 * big
    assert tuned["faults"] < plain["faults"] / 2  # so its pages are not faulted in again every step


def test_the_environment_can_turn_it_off():
    """VOICESTREAM_KEEP_FREED_MEMORY=0: a process that must give memory back keeps glibc's defaults."""
    import os

    code = "from voicestream.malloc import keep_freed_memory; print(keep_freed_memory())"
    env = {**os.environ, "VOICESTREAM_KEEP_FREED_MEMORY": "0"}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert off.stdout.strip() == "False", off.stderr
    if sys.platform.startswith("linux"):
        env["VOICESTREAM_KEEP_FREED_MEMORY"] = "1"
        on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert on.stdout.strip() == "True", on.stderr


FRAGMENT = r"""
import random, sys, torch
from voicestream.malloc import keep_freed_memory, release_freed_memory

def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

assert keep_freed_memory()
release = sys.argv[1] == "1"
start = rss_mib()
rng = random.Random(0)
kept = []
for step in range(200):  # each 'step' frees 4 activations of varying size and keeps one small block
    temps = [torch.empty(rng.randrange(5, 15) * 2**20).fill_(1.0) for _ in range(4)]  # 20-60 MiB
    kept.append(torch.empty(2**19).fill_(1.0))  # 2 MiB that outlives the step, like a cached state
    del temps
    if release and step % 10 == 9:
        assert release_freed_memory()
print(rss_mib() - start)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_releasing_freed_memory_keeps_a_fragmented_heap_from_growing():
    """Blocks that outlive a step split the never-trimmed heap's free space, so later steps'
    large blocks stop fitting and the heap grows step after step; release_freed_memory hands
    the free pages back, so the process holds about what it uses."""
    rss = {}  # growth of the resident set over the loop, MiB
    for release in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", FRAGMENT, release], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        rss[release] = float(out.stdout.strip().splitlines()[-1])
    kept = 200 * 2  # MiB that outlive the loop
    assert rss["1"] < kept + 150, rss  # released: the process holds about what it keeps
    assert rss["0"] > rss["1"] + 150, rss  # not released, the heap grew beyond it (here 1.8-5.5x the kept)
