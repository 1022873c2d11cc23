"""``python -m anchor_lightning.diagnose`` (same as ``python -m anchor_lightning diagnose``)."""

from anchor_lightning.diagnostics.cli import main

if __name__ == "__main__":
    main()
