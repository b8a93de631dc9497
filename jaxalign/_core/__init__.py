"""Private helpers every layer of jaxalign may use, each with one home.

One module per job: argument validation (``validation``), memory budget and
target batch sizing (``memory``), atomic files and writable folders
(``files``), the float64 column z-score (``zscore``), run bookkeeping
(``runs``: run segments, trimming, the word -> scan rule), named random
streams (``seeds``), the CLI command registry (``commands``) and the rules of
config files (``config``: the study and fine-tuning configs).

This package imports nothing from the rest of jaxalign (an import-linter
contract in pyproject.toml checks it), so ``ridge``, ``stats``, ``io``,
``timing``, ``lm`` and ``features`` can all share it without an arrow
pointing up the data flow. This ``__init__`` re-exports nothing: import
from the module that does the job.
"""
