"""Forced alignment with pocketsphinx (offline, 10 ms resolution): audio and its words to timed words and phones.

Phones use the CMU set of training.corpus.text.PHONES, plus "SIL" for silence (pauses and the clip's edges).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from training.corpus.errors import AlignmentError
from training.corpus.format import SAMPLE_RATE, Segment

FRAME_SECONDS = 0.01  # pocketsphinx's frame: 10 ms
# Change it when the decoder's settings change, so cached alignments (training/real_speech.py) are redone.
ALIGNER_SETTINGS = "cmn=batch bestpath=no"
SILENCE = "SIL"


# Wider beams for a second try when the default ones lose the path (odd synthetic voices).
WIDE_BEAMS = {"beam": 1e-100, "wbeam": 1e-80, "pbeam": 1e-100, "lpbeam": 1e-80, "lponlybeam": 1e-80}


@lru_cache(maxsize=2)
def _decoder(wide: bool = False):
    from pocketsphinx import Decoder

    # lm=None: no language model search is loaded; alignment sets its own search for each utterance.
    # cmn="batch": cepstral mean normalisation over the whole utterance, which suits offline alignment.
    # bestpath=False, as pocketsphinx's own aligner sets it: the best-path pass can end the word alignment
    # with a one-frame "</s>", and the phone pass then fails ("Failed to stop utterance processing"; it did
    # on real read speech, pocketsphinx issue #339).
    return Decoder(lm=None, loglevel="FATAL", cmn="batch", bestpath=False, **(WIDE_BEAMS if wide else {}))


def _run(decoder, pcm: bytes, text: str) -> list[tuple[str, int, int, list[tuple[str, int, int]]]]:
    """[(word, start frame, frames, [(phone, start frame, frames)])] of one utterance: words, then phones.

    The phone (state) alignment of a long utterance often fails to finish in pocketsphinx even when its word
    alignment succeeds; then the phones are aligned in two halves on the word alignment's spans, and so on
    down to single words."""
    decoder.set_align_text(text)
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    if decoder.hyp() is None:
        raise RuntimeError("the word alignment did not reach the end of the text")
    words = [(seg.word, seg.start_frame, seg.end_frame - seg.start_frame + 1) for seg in decoder.seg()]
    spoken = [i for i, w in enumerate(words) if not _is_silence(w[0])]
    if [words[i][0].split("(")[0] for i in spoken] != text.split():
        raise RuntimeError(f"the word alignment found {len(spoken)} of the {len(text.split())} words")
    try:
        decoder.set_alignment()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        result = [(w.name, w.start, w.duration, [(p.name, p.start, p.duration) for p in w])
                  for w in decoder.get_alignment()]
        if [w[0].split("(")[0] for w in result if not _is_silence(w[0])] == text.split():
            return result
        problem = "the phone alignment stopped early"
    except RuntimeError as exc:
        problem = str(exc)
    if len(spoken) <= 1:
        raise RuntimeError(problem)
    out: list = []
    bytes_per_frame = 2 * int(SAMPLE_RATE * FRAME_SECONDS)
    half = (len(spoken) + 1) // 2
    for c in range(0, len(spoken), half):
        group = [words[i] for i in spoken[c:c + half]]
        first, last = group[0][1], group[-1][1] + group[-1][2]
        if out and first > out[-1][1] + out[-1][2]:  # the silence between groups
            end = out[-1][1] + out[-1][2]
            out.append(("<sil>", end, first - end, [(SILENCE, end, first - end)]))
        elif not out and first > 0:
            out.append(("<sil>", 0, first, [(SILENCE, 0, first)]))
        chunk = pcm[first * bytes_per_frame:last * bytes_per_frame]
        sub = _run(decoder, chunk, " ".join(w[0].split("(")[0] for w in group))
        out += [(w, s + first, d, [(p, ps + first, pd) for p, ps, pd in phones]) for w, s, d, phones in sub]
    return out


def _known(word: str) -> bool:
    return _decoder().lookup_word(word) is not None


def align(audio: np.ndarray, text: str,
          pronunciations: dict[str, tuple[str, ...]] | None = None) -> tuple[list[Segment], list[Segment]]:
    """(words, phones) of 16 kHz mono audio speaking `text` (lowercase words of the CMU dictionary, or words
    that `pronunciations` gives phones for: {word: (CMU phones without stress)}).

    The segments tile the audio from 0 to its end; silences are words "<sil>" and phones "SIL"."""
    words = text.lower().split()
    pronunciations = pronunciations or {}
    unknown = [w for w in words if w not in pronunciations and not _known(w)]
    if unknown:
        raise AlignmentError(f"the words {', '.join(unknown)} are not in pocketsphinx's dictionary")
    if not words:
        raise AlignmentError("there is no text to align")
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    alignment, problem = None, "no alignment"
    for wide in (False, True):
        try:
            decoder = _decoder(wide)
            for word, phones in pronunciations.items():
                if decoder.lookup_word(word) is None:
                    decoder.add_word(word, " ".join(phones), True)
            alignment = _run(decoder, pcm, " ".join(words))
        except RuntimeError as exc:
            problem = str(exc)
            _decoder.cache_clear()  # a failed search can leave the decoder unusable
            alignment = None
        if alignment is not None:
            spoken = [w[0].split("(")[0] for w in alignment if not _is_silence(w[0])]
            if spoken == words:
                break
            problem = f"it aligned {len(spoken)} of the {len(words)} words"
            alignment = None
    if alignment is None:
        raise AlignmentError(f"pocketsphinx could not align '{text[:40]}': {problem}")
    seconds = audio.size / SAMPLE_RATE
    word_segs: list[Segment] = []
    phone_segs: list[Segment] = []
    for word_name, word_start, word_frames, phones in alignment:
        name = "<sil>" if _is_silence(word_name) else word_name.split("(")[0]
        start, end = word_start * FRAME_SECONDS, (word_start + word_frames) * FRAME_SECONDS
        word_segs.append(Segment(name, start, min(end, seconds)))
        for phone_name, phone_start, phone_frames in phones:
            label = SILENCE if phone_name in ("SIL", "+SPN+", "+NSN+") or name == "<sil>" else phone_name
            p_start = phone_start * FRAME_SECONDS
            p_end = min((phone_start + phone_frames) * FRAME_SECONDS, seconds)
            phone_segs.append(Segment(label, p_start, p_end))
    # Close the tiling: a silence from the last phone to the end of the audio.
    if phone_segs and seconds - phone_segs[-1].end >= FRAME_SECONDS:
        phone_segs.append(Segment(SILENCE, phone_segs[-1].end, seconds))
        word_segs.append(Segment("<sil>", word_segs[-1].end, seconds))
    return _merge_silences(word_segs, "<sil>"), _merge_silences(phone_segs, SILENCE)


def _is_silence(name: str) -> bool:
    return name in ("<sil>", "<s>", "</s>") or name.startswith("+") or name.startswith("[")


def _merge_silences(segments: list[Segment], silence: str) -> list[Segment]:
    out: list[Segment] = []
    for p in segments:
        if out and p.label == silence and out[-1].label == silence:
            out[-1] = Segment(silence, out[-1].start, p.end)
        else:
            out.append(Segment(p.label, p.start, p.end))
    return out
