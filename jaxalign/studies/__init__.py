"""Study pipelines built on the library: end-to-end analyses of real data.

config
    ``StudyConfig``: a whole study as one validated schema, the same in
    Python and in TOML (``StudyConfig.from_toml("examples/alice.toml")``);
    ``ConfigError`` lists every problem of a config, one line per key.
alice
    Alice in Wonderland fMRI (Brennan et al. 2016): LM layers vs 6 language
    ROIs, nested ridge CV, group sign-flip tests (``jaxalign alice``).
"""

from jaxalign.studies.config import ConfigError, StudyConfig

__all__ = ["ConfigError", "StudyConfig"]
