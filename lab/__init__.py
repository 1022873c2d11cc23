"""The experiments behind the docs, apart from the product: never imported by ``anchor_lightning``
(a map in lab/README.md)."""
