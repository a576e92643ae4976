"""ABC notation checks and ABC -> MIDI, for serving and the quality gate (no torch, no music21).

`header_problems` is a structural check of one tune: the X:, T:, M: and K: header fields
and a body of music after K:. MIDI comes from `abc2midi` (Debian package `abcmidi`), a strict
external parser: it lists every error it finds, and the MIDI it writes is checked for notes.
It runs under CPU, memory and file-size rlimits, and its MIDI is capped (MAX_MIDI_BYTES);
the server renders on a small pool of its own (serving/tune_http.py: MIDI_POOL).
"""

from __future__ import annotations

import re
import resource
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgestack.errors import InputError

REQUIRED_HEADERS = ("X", "T", "M", "K")
MAX_ABC_CHARS = 20_000
ABC2MIDI_TIMEOUT_S = 10.0
# abc2midi runs under rlimits (`limited`): CPU seconds, address space, and the largest file it may
# write, which is also the cap on the MIDI we return (a 20,000-character tune writes tens of KB).
ABC2MIDI_CPU_S = 5
ABC2MIDI_MEMORY_BYTES = 512 * 1024 * 1024
MAX_MIDI_BYTES = 1024 * 1024
_FIELD = re.compile(r"^([A-Za-z]):(.*)$")
_NOTE = re.compile(r"[A-Ga-gz]")


def header_problems(text: str) -> list[str]:
    """What keeps `text` from being one tune with X:, T:, M:, K: headers and a body (empty: fine)."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    if not lines or not lines[0].startswith("X:"):
        return ["a tune must start with an X: (reference number) line"]
    seen: dict[str, str] = {}
    body_start = None
    for i, line in enumerate(lines):
        match = _FIELD.match(line)
        if not match:
            break
        seen.setdefault(match.group(1), match.group(2).strip())
        if match.group(1) == "K":
            body_start = i + 1
            break
    problems = [f"missing {key}: header" + (" (the header block must end with K:)" if key == "K" else "")
                for key in REQUIRED_HEADERS if key not in seen]
    if not seen.get("X", "x").strip().isdigit():
        problems.append(f"X: must be a number, got {seen.get('X')!r}")
    if body_start is None:  # K: missing, or music began before it (K: closes the header block)
        return problems
    body = "\n".join(line for line in lines[body_start:] if not _FIELD.match(line) and not line.startswith("%"))
    if not _NOTE.search(body):
        problems.append("no music after the K: header (the body has no notes)")
    return problems


def abc2midi_available() -> bool:
    return shutil.which("abc2midi") is not None


def _read_varlen(data: bytes, i: int) -> tuple[int, int]:
    """A MIDI variable-length quantity at `i`: (value, position after it)."""
    value = 0
    while i < len(data):
        value = (value << 7) | (data[i] & 0x7F)
        i += 1
        if not data[i - 1] & 0x80:
            break
    return value, i


def count_note_ons(midi: bytes) -> int:
    """Note-on events (velocity > 0) in a standard MIDI file; 0 for anything unreadable."""
    if midi[:4] != b"MThd":
        return 0
    pos, notes = 8 + int.from_bytes(midi[4:8], "big"), 0
    while pos + 8 <= len(midi):
        kind, length = midi[pos:pos + 4], int.from_bytes(midi[pos + 4:pos + 8], "big")
        track, pos = midi[pos + 8:pos + 8 + length], pos + 8 + length
        if kind != b"MTrk":
            continue
        i, status = 0, 0
        while i < len(track):
            while i < len(track) and track[i] & 0x80:  # delta time (variable length)
                i += 1
            i += 1
            if i >= len(track):
                break
            if track[i] & 0x80:
                status = track[i]
                i += 1
            if status in (0xFF, 0xF0, 0xF7):  # meta (type byte, then length, data) or sysex (length, data)
                if status == 0xFF:
                    i += 1
                length, i = _read_varlen(track, i)
                i += length
            else:
                kind_bits = status & 0xF0
                size = 1 if kind_bits in (0xC0, 0xD0) else 2
                if kind_bits == 0x90 and i + 1 < len(track) and track[i + 1] > 0:
                    notes += 1
                i += size
    return notes


@dataclass
class MidiResult:
    midi: bytes
    notes: int
    errors: list[str] = field(default_factory=list)    # abc2midi's "Error ..." lines
    warnings: list[str] = field(default_factory=list)  # abc2midi's "Warning ..." lines


def limited(cpu_seconds: int = ABC2MIDI_CPU_S, memory_bytes: int = ABC2MIDI_MEMORY_BYTES,
            file_bytes: int = MAX_MIDI_BYTES):
    """A preexec_fn that puts a child process under CPU, address-space and file-size rlimits
    (only setrlimit runs between fork and exec: no Python lock is taken there)."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    return apply


def abc2midi(text: str, timeout: float = ABC2MIDI_TIMEOUT_S, max_midi_bytes: int = MAX_MIDI_BYTES) -> MidiResult:
    """Run abc2midi on one tune, under rlimits; the MIDI bytes (maybe empty) and what it complained
    about. 422 when it runs out of time or CPU, 413 when its MIDI would exceed `max_midi_bytes`."""
    exe = shutil.which("abc2midi")
    if exe is None:
        raise InputError("MIDI rendering needs abc2midi on the server (Debian: apt-get install abcmidi)", 503)
    with tempfile.TemporaryDirectory(prefix="edgestack-abc-") as tmp:
        src, dst = Path(tmp) / "tune.abc", Path(tmp) / "tune.mid"
        src.write_text(text.strip() + "\n", encoding="utf-8")
        try:
            run = subprocess.run([exe, str(src), "-o", str(dst)], capture_output=True, text=True,
                                 timeout=timeout, errors="replace", stdin=subprocess.DEVNULL,
                                 preexec_fn=limited(file_bytes=max_midi_bytes + 1))
        except subprocess.TimeoutExpired:
            raise InputError(f"abc2midi took longer than {timeout:g}s on this ABC", 422) from None
        size = dst.stat().st_size if dst.is_file() else 0
        if size > max_midi_bytes or run.returncode == -signal.SIGXFSZ:
            raise InputError(f"this ABC renders to more than {max_midi_bytes:,} bytes of MIDI (the limit)", 413)
        if run.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
            raise InputError(f"abc2midi used more than {ABC2MIDI_CPU_S} s of CPU on this ABC", 422)
        midi = dst.read_bytes() if dst.is_file() else b""
    lines = (run.stdout + run.stderr).splitlines()
    return MidiResult(midi, count_note_ons(midi), [ln.strip() for ln in lines if ln.startswith("Error")],
                      [ln.strip() for ln in lines if ln.startswith("Warning")])


def render_midi(text: str) -> MidiResult:
    """ABC text -> MIDI, or InputError (422) saying why this is not a tune that renders."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("no ABC given: send the tune as `abc` (text starting with X:)")
    if len(text) > MAX_ABC_CHARS:
        raise InputError(f"ABC text has {len(text)} characters; the limit is {MAX_ABC_CHARS}", 413)
    problems = header_problems(text)
    if problems:
        raise InputError("invalid ABC: " + "; ".join(problems), 422)
    result = abc2midi(text)
    if not result.midi or result.notes == 0:
        detail = "; ".join(result.errors[:5]) or "abc2midi wrote no notes"
        raise InputError(f"invalid ABC: abc2midi could not render it ({detail})", 422)
    return result
