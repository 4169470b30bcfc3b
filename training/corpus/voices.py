"""Speech engines and voice configurations: which engines and voices are installed, a deterministic choice of
voice configurations (engine, voice, variant, rate, pitch), and the split of speakers into train/val/test.

A voice configuration is one synthetic speaker. Configurations that share an engine voice and variant (the same
timbre) are one *voice group*, and the split is made by group, so test voices are never heard in training.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from training.corpus.errors import EngineMissingError, VoiceMissingError
from training.corpus.format import assign_splits

ENGINES = ("espeak-ng", "flite", "festival")
ENGINE_PROGRAMS = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}
# espeak-ng variants that do not sound like a person speaking normally.
_ESPEAK_VARIANT_EXCLUDE = re.compile(r"robo|demonic|whisper|fast|announcer|unirobot|tweaky|kaukovalta|mr$",
                                     re.IGNORECASE)
# flite voices: awb_time only says the time; kal is the 8 kHz copy of kal16.
_FLITE_EXCLUDE = {"awb_time", "kal"}
# festival voices that honour Duration_Stretch and int_lr_params; the others get rate and pitch from sox.
_FESTIVAL_NATIVE_PROSODY = re.compile(r"_diphone$|lpc")
# People whose recordings several engines' voices are built from.
_RECORDED_SPEAKERS = ("slt", "kal", "awb", "rms", "ked", "bdl", "jmk", "clb", "rab")


@dataclass(frozen=True)
class VoiceConfig:
    """One synthetic speaker. rate: speaking-rate factor (1 = the voice's own); pitch: semitones from its own."""

    engine: str
    voice: str
    variant: str = ""
    rate: float = 1.0
    pitch: float = 0.0

    @property
    def group(self) -> str:
        """The voice's timbre; configurations of one group always land in the same split. For espeak-ng the
        variant sets the timbre (the accent only changes pronunciation); flite and festival voices recorded
        from the same person (slt, kal) are one group."""
        if self.engine == "espeak-ng":
            return f"espeak-ng+{self.variant or 'default'}"
        for person in _RECORDED_SPEAKERS:
            if re.search(rf"(^|_){person}(\d*|_|$)", self.voice):
                return f"recorded:{person}"
        return f"{self.engine}:{self.voice}"

    @property
    def id(self) -> str:
        """The speaker id, also a spec that `parse` reads back: engine:voice[+variant]@rate,pitch."""
        base = f"{self.engine}:{self.voice}" + (f"+{self.variant}" if self.variant else "")
        return f"{base}@{self.rate:.2f},{self.pitch:+.1f}"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def parse(cls, spec: str) -> "VoiceConfig":
        """'engine:voice[+variant][@rate,pitch]', e.g. 'espeak-ng:en-us+f3@1.1,2' or 'flite:slt'."""
        m = re.fullmatch(r"([a-z-]+):([^+@]+)(?:\+([^@]+))?(?:@([0-9.]+),([+-]?[0-9.]+))?", spec.strip())
        if not m:
            raise VoiceMissingError(f"cannot read the voice '{spec}': write engine:voice[+variant][@rate,pitch], "
                                    "for example espeak-ng:en-us+f3@1.1,2")
        engine, voice, variant, rate, pitch = m.groups()
        if engine not in ENGINES:
            raise EngineMissingError(f"unknown speech engine '{engine}' in '{spec}'; the engines are "
                                     f"{', '.join(ENGINES)}")
        return cls(engine, voice, variant or "", float(rate or 1.0), float(pitch or 0.0))


def engine_installed(engine: str) -> bool:
    return shutil.which(ENGINE_PROGRAMS[engine]) is not None


def require_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise EngineMissingError(f"unknown speech engine '{engine}'; the engines are {', '.join(ENGINES)}")
    if not engine_installed(engine):
        raise EngineMissingError(f"the speech engine {engine} is not installed (no '{ENGINE_PROGRAMS[engine]}' "
                                 "on PATH); install it (Debian: apt-get install espeak-ng flite festival) "
                                 "or choose other engines with --engines")


def _run(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


@lru_cache(maxsize=None)
def installed_voices(engine: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(voices, variants) of an installed engine; English voices only. Raises EngineMissingError."""
    require_engine(engine)
    if engine == "espeak-ng":
        voices, variants = [], []
        for line in _run(["espeak-ng", "--voices=en"]).splitlines()[1:]:
            parts = line.split()
            # Voices whose file is under mb/ need the mbrola program and its databases.
            if len(parts) >= 5 and parts[1].startswith("en") and (not parts[4].startswith("mb/")
                                                                    or shutil.which("mbrola")):
                voices.append(parts[1])
        for line in _run(["espeak-ng", "--voices=variant"]).splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 5 and parts[4].startswith("!v/"):
                name = parts[4][3:]
                if not _ESPEAK_VARIANT_EXCLUDE.search(name):
                    variants.append(name)
        return tuple(sorted(set(voices))), tuple(sorted(set(variants)))
    if engine == "flite":
        out = _run(["flite", "-lv"])
        names = out.split(":", 1)[1].split() if ":" in out else []
        return tuple(sorted(n for n in names if n not in _FLITE_EXCLUDE)), ()
    # festival: the voice folders under its library's voices/<language>/ directories.
    out = _run(["festival", "-b", "(begin (mapcar (lambda (v) (format t \"%s\\n\" v)) (voice.list)))"])
    names = [n for n in out.split() if re.fullmatch(r"[a-z0-9_]+", n)]
    english = [n for n in names if n.startswith(("kal", "ked", "cmu_us", "rab", "don", "el", "cstr_us", "cstr_uk"))]
    return tuple(sorted(english)), ()


def check_voice(config: VoiceConfig) -> None:
    """Raise EngineMissingError or VoiceMissingError unless the configuration can be synthesized here."""
    voices, variants = installed_voices(config.engine)
    if config.voice not in voices:
        raise VoiceMissingError(f"the {config.engine} voice '{config.voice}' is not installed; installed: "
                                f"{', '.join(voices) or 'none'}")
    if config.variant and config.variant not in variants:
        raise VoiceMissingError(f"the espeak-ng variant '{config.variant}' is not installed")
    if config.engine == "festival" and not _FESTIVAL_NATIVE_PROSODY.search(config.voice) and not shutil.which("sox"):
        if config.rate != 1.0 or config.pitch != 0.0:
            raise EngineMissingError(f"the festival voice {config.voice} needs sox to change rate and pitch, "
                                     "and sox is not installed")


def festival_native_prosody(voice: str) -> bool:
    return bool(_FESTIVAL_NATIVE_PROSODY.search(voice))


def choose_voices(n: int, seed: int, engines=ENGINES) -> list[VoiceConfig]:
    """n voice configurations, spread over the installed engines; the same for the same seed and system.

    Every installed flite and festival voice comes first (each at two prosodies when n allows); espeak-ng
    fills the rest with accent x variant combinations. Rate and pitch are drawn per configuration."""
    rng = np.random.default_rng([seed, 0x5A11])
    available = [e for e in engines if engine_installed(e)]
    if not available:
        for e in engines:
            require_engine(e)
    groups: list[tuple[str, str, str]] = []
    for engine in available:
        voices, _ = installed_voices(engine)
        if engine != "espeak-ng":
            groups += [(engine, v, "") for v in voices]
    espeak: list[tuple[str, str, str]] = []
    if "espeak-ng" in available:
        voices, variants = installed_voices("espeak-ng")
        espeak = [("espeak-ng", v, var) for v in voices for var in variants]
        rng.shuffle(espeak)
    configs: list[VoiceConfig] = []
    # Two prosodies per non-espeak voice while they make up at most a third of the configurations.
    per_voice = 2 if 2 * len(groups) <= max(n // 3, 1) else 1
    for engine, voice, variant in groups:
        for _ in range(per_voice):
            configs.append(_draw(rng, engine, voice, variant))
    for engine, voice, variant in espeak:
        if len(configs) >= n:
            break
        configs.append(_draw(rng, engine, voice, variant))
    if len(configs) > n:
        order = rng.permutation(len(configs))[:n]
        configs = [configs[i] for i in sorted(order)]
    return configs


def _draw(rng: np.random.Generator, engine: str, voice: str, variant: str) -> VoiceConfig:
    rate = float(np.round(rng.uniform(0.8, 1.25), 2))
    pitch = float(np.round(rng.uniform(-3.0, 3.0), 1))
    return VoiceConfig(engine, voice, variant, rate, pitch)


def split_by_voice(configs: list[VoiceConfig], seed: int, val: float = 0.1, test: float = 0.1) -> dict[str, str]:
    """config id -> split. Whole voice groups go to one split (see assign_splits)."""
    split_of_group = assign_splits(sorted({c.group for c in configs}), seed, val, test)
    return {c.id: split_of_group[c.group] for c in configs}
