"""Sentences for the synthetic corpus, built here: GRID-style grammar sentences, and random sentences of words
from the CMU dictionary that pocketsphinx ships, chosen for phone coverage and made fluent with its language model.

No text comes from outside: the only inputs are the grammar below and pocketsphinx's dictionary and model.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

# The 39 phones of the CMU dictionary (stress removed), as pocketsphinx's en-us model names them.
VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
CONSONANTS = ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH", "T",
              "TH", "V", "W", "Y", "Z", "ZH")
PHONES = VOWELS + CONSONANTS

# A grammar in the style of the GRID corpus: command colour preposition letter digit adverb.
GRID_SLOTS = (
    ("bin", "lay", "place", "set"),
    ("blue", "green", "red", "white"),
    ("at", "by", "in", "with"),
    tuple("abcdefghijklmnopqrstuvxyz"),  # GRID leaves out w
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    ("again", "now", "please", "soon"),
)
_WORD = re.compile(r"^[a-z]+$")
# Words the sentence generator never uses.
_UNWANTED = {"shit", "fuck", "fucking", "fucked", "bitch", "cunt", "nigger", "nigga", "faggot", "whore", "slut",
             "rape", "raped", "porn", "dick", "cock", "pussy", "bastard", "asshole", "damn", "hell", "sexy", "sex"}


def pocketsphinx_model_dir() -> Path:
    from pocketsphinx import get_model_path

    return Path(get_model_path()) / "en-us"


@lru_cache(maxsize=2)
def load_dictionary(path: str | None = None) -> dict[str, list[tuple[str, ...]]]:
    """The pronouncing dictionary: word -> its pronunciations (tuples of phones, stress digits removed)."""
    path = Path(path) if path else pocketsphinx_model_dir() / "cmudict-en-us.dict"
    words: dict[str, list[tuple[str, ...]]] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        word = re.sub(r"\(\d+\)$", "", parts[0])
        words.setdefault(word, []).append(tuple(re.sub(r"\d", "", p) for p in parts[1:]))
    return words


def pronounce(sentence: str) -> list[str]:
    """The phones of a sentence by the dictionary's first pronunciation of each word."""
    dictionary = load_dictionary()
    return [p for w in sentence.split() for p in dictionary[w][0]]


def grid_sentence(rng: np.random.Generator) -> str:
    return " ".join(slot[rng.integers(len(slot))] for slot in GRID_SLOTS)


class _Vocabulary:
    """Common dictionary words (by the language model's unigram probability) with sampling weights that favour
    rare phones, and the language model to pick fluent continuations."""

    def __init__(self, size: int = 12000):
        from pocketsphinx import LogMath, NGramModel

        self.lm = NGramModel(None, LogMath(), str(pocketsphinx_model_dir() / "en-us.lm.bin"))
        dictionary = load_dictionary()
        words = sorted(w for w in dictionary if _WORD.match(w) and (len(w) > 1 or w in ("a", "i"))
                       and w not in _UNWANTED)
        logp = np.array([self.lm.prob([w]) for w in words], dtype=np.float64) * np.log(1.0001)
        keep = np.argsort(-logp)[:size]
        keep.sort()
        self.words = [words[i] for i in keep]
        unigram = np.exp(logp[keep] - logp[keep].max())
        phone_mass = Counter()
        for w, p in zip(self.words, unigram):
            for ph in dictionary[w][0]:
                phone_mass[ph] += p
        total = sum(phone_mass.values())
        rarity = {ph: (total / (phone_mass.get(ph, 0.0) + 1e-3 * total)) ** 0.5 for ph in PHONES}
        boost = np.array([max(rarity.get(ph, 1.0) for ph in dictionary[w][0]) for w in self.words])
        weights = unigram ** 0.35 * boost
        self.cdf = np.cumsum(weights / weights.sum())

    def sample(self, rng: np.random.Generator, k: int) -> list[str]:
        idx = np.searchsorted(self.cdf, rng.random(k), side="right")
        return [self.words[min(i, len(self.words) - 1)] for i in idx]

    def sentence(self, rng: np.random.Generator, n_words: int, candidates: int = 48) -> str:
        out: list[str] = []
        for _ in range(n_words):
            cands = self.sample(rng, candidates)
            history = out[-2:]
            score = np.array([self.lm.prob(history + [c]) for c in cands], dtype=np.float64) * np.log(1.0001)
            p = np.exp(0.5 * (score - score.max()))
            out.append(cands[int(rng.choice(len(cands), p=p / p.sum()))])
        return " ".join(out)


@lru_cache(maxsize=1)
def _vocabulary() -> _Vocabulary:
    return _Vocabulary()


def dictionary_sentence(rng: np.random.Generator) -> str:
    return _vocabulary().sentence(rng, int(rng.integers(5, 12)))


def make_sentences(n: int, seed: int, grid_fraction: float = 0.4) -> list[tuple[str, str]]:
    """n sentences as (kind, text), kind "grid" or "dictionary"; the same for the same seed."""
    rng = np.random.default_rng([seed, 0x7E47])
    out = []
    for _ in range(n):
        if rng.random() < grid_fraction:
            out.append(("grid", grid_sentence(rng)))
        else:
            out.append(("dictionary", dictionary_sentence(rng)))
    return out


def phone_counts(sentences) -> Counter:
    """How often each of the 39 phones occurs in the sentences (by dictionary pronunciation)."""
    counts = Counter({p: 0 for p in PHONES})
    for s in sentences:
        counts.update(pronounce(s))
    return counts
