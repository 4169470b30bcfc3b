"""Thunder's training code: corpus making, mesh-to-speech and diffusion training, evaluation.

May import backend; backend never imports training.
"""
