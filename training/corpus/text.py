"""Sentences for the synthetic corpus.

By default they are natural connected English read from a sentences file (id<TAB>text, one a line; the
project's default is ../shared/text/ljspeech_sentences.tsv beside the repository, public-domain LJ Speech
texts), because real sentences coarticulate and phrase the way people talk. Where no sentences file is given or
found, they are built here: GRID-style grammar sentences, and random sentences of words from the CMU dictionary
that pocketsphinx ships, chosen for phone coverage and made fluent with its language model.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

from training.corpus.errors import CorpusError

# The sentences file the corpus reads when none is named: ../shared/text/ beside the repository (not in it).
DEFAULT_SENTENCES = Path(__file__).resolve().parents[3] / "shared" / "text" / "ljspeech_sentences.tsv"
# Abbreviations an engine expands into words that the alignment text would not have.
_ABBREVIATION = re.compile(r"\b(Mr|Mrs|Messrs|Dr|St|Co|No|Jr|Sr|Gen|Col|Capt|Lt|Rev|Hon|Sgt|Esq|Mt|Ft|Ltd)\.")
MAX_SENTENCE_WORDS = 30  # about 10 s at a natural rate; training crops windows anyway

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


def spoken_and_words(raw: str) -> tuple[str, str] | None:
    """A sentence as the engines should read it (its punctuation kept, for phrasing) and as the aligner reads
    it (lowercase dictionary words); None when it has words the dictionary lacks, abbreviations or initials,
    or is too short or too long."""
    if _ABBREVIATION.search(raw):
        return None
    spoken = raw.replace("\u201c", '"').replace("\u201d", '"').replace("\u2019", "'")
    spoken = re.sub(r"\s*--\s*", ", ", spoken)
    spoken = re.sub(r"(?<=[A-Za-z])-(?=[A-Za-z])", " ", spoken)
    spoken = re.sub(r"[\[\]()\"]", " ", spoken)
    if re.search(r"[^A-Za-z' .,;:?!-]", spoken):
        return None
    spoken = re.sub(r"\s+", " ", spoken).strip()
    words = [w.strip("'") for w in re.sub(r"[^a-z' ]", " ", spoken.lower()).split()]
    words = [w for w in words if w]
    dictionary = load_dictionary()
    if not 3 <= len(words) <= MAX_SENTENCE_WORDS:
        return None
    if any(w not in dictionary or (len(w) == 1 and w not in ("a", "i")) for w in words):
        return None
    return spoken, " ".join(words)


@lru_cache(maxsize=4)
def read_sentences(path: str) -> tuple[tuple[str, str], ...]:
    """The usable sentences of a sentences file (id<TAB>text, a header line allowed) as (spoken, words)."""
    file = Path(path)
    if not file.is_file():
        raise CorpusError(f"the sentences file {file} does not exist")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"the sentences file {file} cannot be read: {exc}") from None
    out = []
    for line in lines:
        raw = line.split("\t", 1)[-1].strip()
        if raw and line.split("\t", 1)[0] != "id":
            sentence = spoken_and_words(raw)
            if sentence:
                out.append(sentence)
    if not out:
        raise CorpusError(f"the sentences file {file} has no usable sentences (id<TAB>text lines whose words "
                          "are all in pocketsphinx's dictionary)")
    return tuple(out)


def default_sentences_file() -> str | None:
    """The project's sentences file where it exists here, else None (the generated sentences)."""
    return str(DEFAULT_SENTENCES) if DEFAULT_SENTENCES.is_file() else None


def make_sentences(n: int, seed: int, grid_fraction: float = 0.4,
                   sentences_file: str | None = None) -> list[tuple[str, str, str]]:
    """n sentences as (kind, spoken, words), the same for the same seed, and clip i the same for any n.

    With a sentences file: kind "read", its sentences in a seeded order (repeating after all were used).
    Without: kind "grid" (grid_fraction of them) or "dictionary", spoken as written."""
    if sentences_file:
        usable = read_sentences(sentences_file)
        order = np.random.default_rng([seed, 0x5E47]).permutation(len(usable))
        return [("read", *usable[order[i % len(usable)]]) for i in range(n)]
    rng = np.random.default_rng([seed, 0x7E47])
    out = []
    for _ in range(n):
        if rng.random() < grid_fraction:
            text = grid_sentence(rng)
            out.append(("grid", text, text))
        else:
            text = dictionary_sentence(rng)
            out.append(("dictionary", text, text))
    return out


def phone_counts(sentences) -> Counter:
    """How often each of the 39 phones occurs in the sentences (by dictionary pronunciation)."""
    counts = Counter({p: 0 for p in PHONES})
    for s in sentences:
        counts.update(pronounce(s))
    return counts
