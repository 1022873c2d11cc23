"""Documents in, batches of the batch contract out. The pipeline is plain functions (no Lightning),
in five steps, each in its own module:

1. ``sources.py``   a configured source (file, ``datasets`` directory, hub name, embedded ``default``)
                    as a stream of token-id documents with a content fingerprint; ``formats.py`` reads
                    the files (JSONL text or pre-tokenized, gzip/zstd, Parquet, ``datasets``) and
                    ``tokenizer.py`` / ``default_corpus.py`` supply the tokens and the default corpus
2. ``token_store.py``  the tokenized documents, cached once per source
3. ``pipeline.py``  the held-out split (a hash of each document's index), and the steps run in order
                    (:func:`pipeline.prepare_rows` for a :class:`pipeline.DataSettings`)
4. ``packing.py``   pure packing functions (rows of the first token F then documents) -> ``cache.py``,
                    the packed rows cached and memory-mapped
5. ``sampler.py`` + ``batch.py``  rows grouped into micro-batches of equal work, collated to the batch
                    contract (:class:`batch.Batch`)

``datamodule.py`` is the thin LightningDataModule over them (settings, loaders, resume position);
``inspect.py`` and ``corpus.py`` serve the ``inspect`` verb and the evaluation tools.
"""
