"""``python -m anchor_lightning.evaluate`` (same as ``python -m anchor_lightning evaluate``)."""

from anchor_lightning.eval.cli import main

if __name__ == "__main__":
    main()
