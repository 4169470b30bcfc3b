"""backend.audio_io: every supported file to 16 kHz mono float32, block-wise equal to whole-file resampling,
and one-sentence errors that name the file."""

import re

import numpy as np
import pytest
import soundfile
from scipy.signal import resample_poly

import backend.audio_io as audio_io
from backend.audio import SAMPLE_RATE
from backend.audio_io import AudioFileError, iter_audio_blocks, load_audio, read_samples, to_mono_16k
from backend.errors import ThunderError

# (extension, libsndfile format, subtype): the encodings the loader promises to read
ENCODINGS = {
    "wav_int16": ("wav", "WAV", "PCM_16"),
    "wav_float32": ("wav", "WAV", "FLOAT"),
    "flac_24bit": ("flac", "FLAC", "PCM_24"),
    "ogg_vorbis": ("ogg", "OGG", "VORBIS"),
    "mp3": ("mp3", "MP3", "MPEG_LAYER_III"),
}
LAYOUTS = {"8k_stereo": (8000, 2), "44k1_stereo": (44100, 2), "22k05_mono": (22050, 1)}
LOSSY = {"ogg_vorbis", "mp3"}


def sine(rate, seconds, hz=440.0, amplitude=0.5):
    t = np.arange(int(round(seconds * rate))) / rate
    return amplitude * np.sin(2 * np.pi * hz * t)


def write(path, samples, rate, encoding="wav_float32"):
    _, fmt, subtype = ENCODINGS[encoding]
    soundfile.write(str(path), samples, rate, format=fmt, subtype=subtype)
    return path


def peak_hz(audio, rate=SAMPLE_RATE):
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return np.fft.rfftfreq(audio.size, 1.0 / rate)[np.argmax(spectrum)]


def whole_file_reference(samples, rate):
    """What the loader must equal: mix, scipy's resample_poly with its default filter (in float64, on the
    whole signal), and the promise of samples in [-1, 1]."""
    mono = np.asarray(samples, dtype=np.float64)
    mono = mono.mean(axis=1) if mono.ndim == 2 else mono
    g = np.gcd(rate, SAMPLE_RATE)
    resampled = resample_poly(mono, SAMPLE_RATE // g, rate // g) if rate != SAMPLE_RATE else mono
    return np.clip(resampled, -1.0, 1.0)


# ---------------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_format_rate_and_layout_loads_as_16k_mono(tmp_path, encoding, layout):
    rate, channels = LAYOUTS[layout]
    tone = sine(rate, 1.0)
    # the right channel is silent, so the mix is the tone at half amplitude
    samples = np.stack([tone, np.zeros_like(tone)], axis=1) if channels == 2 else tone
    path = write(tmp_path / f"tone.{ENCODINGS[encoding][0]}", samples, rate, encoding)

    audio = load_audio(path)

    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - 16000) <= 2
    assert peak_hz(audio) == pytest.approx(440.0, abs=1.0)
    expected_rms = (0.25 if channels == 2 else 0.5) / np.sqrt(2)
    middle = audio[1600:-1600]  # away from the edges, where codecs and the resampler ramp in and out
    rms = np.sqrt(np.mean(middle.astype(np.float64) ** 2))
    assert rms == pytest.approx(expected_rms, rel=0.05 if encoding in LOSSY else 0.005)
    if encoding not in LOSSY:  # sample by sample against the whole-file resampling of what was written
        reference = whole_file_reference(samples, rate)
        np.testing.assert_allclose(audio, reference, atol=2e-4 if encoding == "wav_int16" else 1e-5)


@pytest.mark.parametrize("subtype, step", [("PCM_U8", 1 / 128), ("PCM_24", 2 ** -23), ("PCM_32", 2 ** -31),
                                           ("DOUBLE", 0.0)])
def test_other_wav_sample_formats_load_at_their_precision(tmp_path, subtype, step):
    samples = sine(SAMPLE_RATE, 0.5, hz=300.0, amplitude=0.7)
    path = tmp_path / f"{subtype}.wav"
    soundfile.write(str(path), samples, SAMPLE_RATE, subtype=subtype)
    audio = load_audio(path)
    assert audio.shape == samples.shape
    np.testing.assert_allclose(audio, samples, atol=step + 1e-7)  # quantization, plus float32 rounding


def test_channels_are_averaged(tmp_path):
    rng = np.random.default_rng(1)
    samples = rng.uniform(-0.5, 0.5, size=(8000, 3)).astype(np.float32)
    path = write(tmp_path / "three.wav", samples, SAMPLE_RATE)
    np.testing.assert_allclose(load_audio(path), samples.mean(axis=1), atol=1e-7)


def test_silence_loads_as_zeros(tmp_path):
    path = write(tmp_path / "silence.wav", np.zeros((22050 * 2, 2)), 22050, "wav_int16")
    audio = load_audio(path)
    assert audio.shape == (32000,) and not np.any(audio)


def test_clipped_float_audio_is_clipped_to_full_scale(tmp_path):
    samples = sine(SAMPLE_RATE, 0.5, hz=200.0, amplitude=1.8).astype(np.float32)
    path = write(tmp_path / "hot.wav", samples, SAMPLE_RATE)
    np.testing.assert_array_equal(load_audio(path), np.clip(samples, -1.0, 1.0))
    resampled_path = write(tmp_path / "hot44.wav", sine(44100, 0.5, hz=200.0, amplitude=1.8), 44100)
    resampled = load_audio(resampled_path)
    assert resampled.size == 8000 and resampled.min() >= -1.0 and resampled.max() <= 1.0
    assert np.mean(np.abs(resampled) > 0.99) > 0.3  # still a clipped (square-ish) wave at full scale


# ---------------------------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("rate, channels", [(44100, 2), (8000, 1), (48000, 2), (44101, 1)])
def test_block_wise_loading_equals_whole_file_resampling(tmp_path, rate, channels):
    rng = np.random.default_rng(rate)
    samples = np.clip(0.25 * rng.standard_normal((int(3.1 * rate), channels)), -1, 1).astype(np.float32)
    path = write(tmp_path / "noise.wav", samples, rate)

    blocks = list(iter_audio_blocks(path, block_seconds=0.37))

    assert len(blocks) >= 8 and all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    # a block of input gives a block of output, less the filter's reach (held back for the next one); the
    # file's partial last block and the held-back tail come at the end
    assert all(abs(b.size - 0.37 * SAMPLE_RATE) <= 1 for b in blocks[1:-2])
    assert 0.37 * SAMPLE_RATE - 400 < blocks[0].size < 0.37 * SAMPLE_RATE
    joined = np.concatenate(blocks)
    reference = whole_file_reference(samples, rate)
    assert joined.shape == reference.shape
    assert np.abs(joined - reference).max() < 1e-4
    np.testing.assert_array_equal(load_audio(path), joined)


def test_default_blocks_of_a_long_file_join_seamlessly(tmp_path):
    rate = 11025  # 45 s: two 20 s blocks, a 5 s one, and the resampler's held-back tail
    rng = np.random.default_rng(7)
    samples = (0.2 * rng.standard_normal(45 * rate)).astype(np.float32)
    path = write(tmp_path / "long.wav", samples, rate)
    sizes = [b.size for b in iter_audio_blocks(path)]
    assert len(sizes) == 4 and sizes[1] == 20 * SAMPLE_RATE and sum(sizes) == 45 * SAMPLE_RATE
    assert np.abs(load_audio(path) - whole_file_reference(samples, rate)).max() < 1e-4


def test_read_samples_keeps_the_rate_and_channels(tmp_path):
    samples = np.stack([sine(22050, 0.2), sine(22050, 0.2, hz=300.0)], axis=1)
    path = write(tmp_path / "stereo.wav", samples, 22050)
    audio, rate = read_samples(path)
    assert rate == 22050 and audio.shape == samples.shape and audio.dtype == np.float32
    np.testing.assert_allclose(audio, samples, atol=1e-7)
    mono, _ = read_samples(write(tmp_path / "mono.wav", samples[:, 0], 22050))
    assert mono.shape == (samples.shape[0],)


def test_to_mono_16k_on_arrays_matches_scipy():
    samples = np.stack([sine(48000, 0.3), sine(48000, 0.3, hz=1000.0)], axis=1).astype(np.float32)
    out = to_mono_16k(samples, 48000)
    assert out.dtype == np.float32 and out.shape == (4800,)
    assert np.abs(out - whole_file_reference(samples, 48000)).max() < 1e-5


def test_the_corpus_reads_audio_through_this_module():
    from training.corpus import format as corpus_format

    assert corpus_format.read_audio is read_samples and corpus_format.to_mono_16k is to_mono_16k
    assert issubclass(AudioFileError, ThunderError) and issubclass(AudioFileError, ValueError)


# ---------------------------------------------------------------------------------------------- errors
def refused(path, problem):
    """pytest.raises for an AudioFileError whose message names the file and the problem."""
    return pytest.raises(AudioFileError, match=f"{re.escape(str(path))}.*{problem}")


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.wav"
    with refused(path, "does not exist"):
        load_audio(path)


def test_folder(tmp_path):
    with refused(tmp_path, "is a folder"):
        load_audio(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with refused(path, r"is empty \(0 bytes\)"):
        load_audio(path)


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are not samples\n" * 20)
    with refused(path, r"is not a readable audio file \(Thunder reads WAV, FLAC, OGG Vorbis and MP3\)"):
        load_audio(path)


def test_file_without_samples(tmp_path):
    path = write(tmp_path / "header_only.wav", np.zeros((0, 1)), 16000, "wav_int16")
    assert soundfile.info(str(path)).frames == 0
    with refused(path, "has no samples"):
        load_audio(path)
    with refused(path, "has no samples"):
        read_samples(path)


def test_too_long_is_refused_from_the_header_before_decoding(tmp_path, monkeypatch):
    path = write(tmp_path / "ten_seconds.wav", np.zeros(80000), 8000, "wav_int16")

    def no_decoding(*args, **kwargs):
        raise AssertionError("the samples were decoded")

    monkeypatch.setattr(audio_io.soundfile.SoundFile, "read", no_decoding)
    with refused(path, r"lasts 10\.00 s, longer than the limit of 5 s"):
        load_audio(path, max_seconds=5)
    monkeypatch.undo()
    assert load_audio(path, max_seconds=10).size == 160000  # at the limit is fine


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_samples(tmp_path, bad):
    samples = np.zeros((32000, 2), np.float32)
    samples[24000, 1] = bad  # 1.5 s in, in one channel only
    path = write(tmp_path / "broken.wav", samples, 16000)
    with refused(path, r"has NaN or infinite samples \(the first at 1\.50 s\)"):
        load_audio(path)
