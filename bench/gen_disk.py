#!/usr/bin/env python3
"""Generate a deterministic, sparse raw disk image for the backup/restore benchmark.

The image is a sequence of extents in a seeded random order, in these shares of the
disk size (exact, up to 4 KiB rounding):

  1/3  random       incompressible bytes (encrypted volumes, media, compressed files)
  1/3  compressible VM-like data, three kinds mixed:
         text      - slices of a generated word/log-line corpus (config, logs, source)
         binary    - skewed byte distribution with many 0x00/0xff (executables, DBs)
         metadata  - 4 KiB template blocks with small per-block stamps (inode tables,
                     page headers): compresses very well, but no two blocks are equal
  1/6  hole         never written: a sparse hole (SEEK_HOLE sees it)
  1/6  zeros        written zero bytes (allocated, reads as zeros)

Extents are 4 KiB-aligned, 64 KiB..8 MiB long. The same --seed and --size always
give the same bytes. Standard library only; ~3 GiB takes well under a minute.

Usage: gen_disk.py OUTPUT [--size 3GiB] [--seed 1] [--json]
"""

import argparse
import json
import os
import random
import sys
import time

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
ALIGN = 4 * KIB
MIN_EXTENT = 64 * KIB
MAX_EXTENT = 8 * MIB
# Generation works in pieces of at most this size to keep memory flat.
PIECE = 4 * MIB


def parse_size(s: str) -> int:
    t = s.strip().lower().replace("ib", "").rstrip("b")
    units = {"k": KIB, "m": MIB, "g": GIB, "t": 1024 * GIB}
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def split_budget(rng: random.Random, budget: int) -> list[int]:
    """Random 4 KiB-aligned extent lengths summing exactly to `budget`."""
    out = []
    while budget > 0:
        # Log-uniform between MIN and MAX: many small extents, some big ones.
        n = int(MIN_EXTENT * (MAX_EXTENT / MIN_EXTENT) ** rng.random())
        n = max(ALIGN, n // ALIGN * ALIGN)
        n = min(n, budget)
        out.append(n)
        budget -= n
    return out


class Content:
    """Seeded generators for each kind of data."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed * 1_000_003 + 17)
        self.corpus = self._make_corpus(8 * MIB)
        self.binary_table = self._make_binary_table()
        self.templates = [self._make_template(i) for i in range(64)]
        self.block_no = 0

    def _make_corpus(self, size: int) -> bytes:
        rng = self.rng
        syll = ["ka", "lo", "re", "ti", "mon", "dar", "ex", "in", "sta", "ver", "pro",
                "ce", "ss", "ut", "al", "net", "sys", "tem", "d", "s", "er", "on", "ing",
                "ba", "ck", "up", "dis", "k", "vm", "log", "conf", "lib", "usr", "bin"]
        words = sorted({"".join(rng.choices(syll, k=rng.randint(1, 4))) for _ in range(6000)})
        levels = ["INFO", "WARN", "DEBUG", "ERROR", "NOTICE"]
        units = ["systemd", "kernel", "sshd", "cron", "nginx", "postgres", "dockerd"]
        parts = []
        total = 0
        ts = 1_700_000_000
        while total < size:
            kind = rng.random()
            if kind < 0.45:  # log line
                ts += rng.randint(0, 5)
                line = "%d.%06d host-%02d %s[%d]: %s %s\n" % (
                    ts, rng.randint(0, 999_999), rng.randint(0, 16), rng.choice(units),
                    rng.randint(100, 65535), rng.choice(levels),
                    " ".join(rng.choices(words, k=rng.randint(3, 14))))
            elif kind < 0.75:  # prose / docs
                line = " ".join(rng.choices(words, k=rng.randint(5, 20))).capitalize() + ".\n"
            else:  # config / source
                line = "%s%s = \"%s\"  # %s\n" % (
                    "    " * rng.randint(0, 3), rng.choice(words),
                    "/".join(rng.choices(words, k=rng.randint(1, 4))),
                    " ".join(rng.choices(words, k=rng.randint(0, 6))))
            b = line.encode()
            parts.append(b)
            total += len(b)
        return b"".join(parts)[:size]

    def _make_binary_table(self) -> bytes:
        # p(0x00)=1/2, p(0xff)=1/8, 96 other values 1/256 each: ~3.9 bits/byte.
        table = [0x00] * 128 + [0xFF] * 32
        table += self.rng.choices(range(1, 255), k=96)
        self.rng.shuffle(table)
        return bytes(table)

    def _make_template(self, i: int) -> bytes:
        rng = self.rng
        header = b"LBTPL%03d" % i + rng.randbytes(24)
        rec = rng.randbytes(rng.choice([16, 32, 64])) + bytes(rng.choice([0, 32, 64, 96]))
        body = (header + rec * (4 * KIB // len(rec) + 1))[: 4 * KIB]
        return body

    def gen_random(self, rng: random.Random, n: int) -> bytes:
        return rng.randbytes(n)

    def gen_text(self, rng: random.Random, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            ln = min(rng.randint(KIB, 16 * KIB), n - got)
            at = rng.randrange(0, len(self.corpus) - ln)
            parts.append(self.corpus[at:at + ln])
            got += ln
        return b"".join(parts)

    def gen_binary(self, rng: random.Random, n: int) -> bytes:
        return rng.randbytes(n).translate(self.binary_table)

    def gen_metadata(self, rng: random.Random, n: int) -> bytes:
        out = bytearray()
        for _ in range(n // ALIGN):
            blk = bytearray(self.templates[rng.randrange(len(self.templates))])
            self.block_no += 1
            # Block number, a generation counter and 8 random bytes: unique per block.
            blk[32:48] = self.block_no.to_bytes(8, "little") + rng.randbytes(8)
            out += blk
        return bytes(out)


def generate(path: str, size: int, seed: int) -> dict:
    size = size // ALIGN * ALIGN
    rng = random.Random(seed)
    third = size // 3 // ALIGN * ALIGN
    sixth = size // 6 // ALIGN * ALIGN
    budgets = {
        "random": third,
        "compressible": third,
        "hole": sixth,
    }
    budgets["zeros"] = size - sum(budgets.values())
    extents = []
    for kind in ("random", "compressible", "hole", "zeros"):
        extents += [(kind, n) for n in split_budget(rng, budgets[kind])]
    rng.shuffle(extents)

    content = Content(seed)
    data_rng = random.Random(seed * 7919 + 3)
    stats = {k: 0 for k in ("random", "text", "binary", "metadata", "hole", "zeros")}
    zero_piece = bytes(PIECE)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.truncate(0)
        pos = 0
        for kind, n in extents:
            if kind == "hole":
                stats["hole"] += n
                pos += n
                continue
            if kind == "compressible":
                kind = data_rng.choices(["text", "binary", "metadata"], [2, 1, 1])[0]
            stats[kind] += n
            f.seek(pos)
            left = n
            while left > 0:
                m = min(PIECE, left)
                if kind == "zeros":
                    f.write(zero_piece[:m])
                else:
                    f.write(getattr(content, "gen_" + kind)(data_rng, m))
                left -= m
            pos += n
        f.truncate(size)
    os.replace(tmp, path)
    st = os.stat(path)
    return {
        "path": path,
        "size": size,
        "seed": seed,
        "extents": len(extents),
        "allocated": st.st_blocks * 512,
        "bytes": stats,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("output")
    p.add_argument("--size", default="3GiB", help="disk size, e.g. 3GiB, 512MiB (default 3GiB)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    a = p.parse_args()
    t = time.time()
    info = generate(a.output, parse_size(a.size), a.seed)
    info["seconds"] = round(time.time() - t, 2)
    if a.json:
        print(json.dumps(info))
    else:
        b = info["bytes"]
        print("%s: %.2f GiB, %d extents in %.1f s; random %.0f MiB, text %.0f MiB, binary "
              "%.0f MiB, metadata %.0f MiB, written zeros %.0f MiB, holes %.0f MiB" % (
                  a.output, info["size"] / GIB, info["extents"], info["seconds"],
                  b["random"] / MIB, b["text"] / MIB, b["binary"] / MIB,
                  b["metadata"] / MIB, b["zeros"] / MIB, b["hole"] / MIB), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
