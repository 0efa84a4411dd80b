"""The model tables in docs/tissue.md and docs/encoders.md are generated from the records; the docs must hold
them as the code has them (regenerate with the ``markdown_table()`` functions when a record changes)."""

from __future__ import annotations

from conftest import REPO


def test_tissue_models_table():
    from pathweak.tissue.models import markdown_table

    assert markdown_table() in (REPO / "docs" / "tissue.md").read_text()


def test_slide_encoder_and_text_tower_tables():
    from pathweak.encoders.text import markdown_table as text_table
    from pathweak.heads.feather import markdown_table as slide_table

    doc = (REPO / "docs" / "encoders.md").read_text()
    assert slide_table() in doc and text_table() in doc
