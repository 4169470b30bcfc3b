"""Mesh-to-speech (M2S) at inference: the model that hears the lips, and what the backend does with it.

    from backend.m2s import load_m2s
    m2s = load_m2s(SHIPPED_M2S, head)                 # backend/models/__init__.py names the shipped one
    score = lip_reading_score(m2s, expression, jaw, wave)   # backend/m2s/reading.py: a take's score
    samples = lips_audio(m2s, expression, jaw)              # what the lips say, vocoded (Griffin-Lim)

The network (model.py), its inputs (inputs.py), loading (load.py) and the vocoder (vocoder.py) live here, so
the backend never imports training; training/m2s/ keeps the training code (data, units, loss, train, evaluate,
listen) and imports the model from here. docs/m2s.md describes the model.
"""

from backend.m2s.load import M2S, M2S_KIND, load_m2s

__all__ = ["M2S", "M2S_KIND", "load_m2s"]
