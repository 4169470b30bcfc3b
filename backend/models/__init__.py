"""The models Thunder ships, installed with the package (pyproject.toml's package-data), so that a plain
`pip install .` generates with them as an editable install does. The one place that names their folders.

    thunder/   the THUNDER model (THUNDER-T, w_m2s 0.1; how it was made: thunder/MADE_WITH.md)
    m2s/       the mesh-to-speech model that supervised it (docs/m2s.md)
"""

from pathlib import Path

SHIPPED_THUNDER = Path(__file__).resolve().parent / "thunder"
SHIPPED_M2S = Path(__file__).resolve().parent / "m2s"
