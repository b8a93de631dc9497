"""Study pipelines built on the library: end-to-end analyses of real data.

alice
    Alice in Wonderland fMRI (Brennan et al. 2016): LM layers vs 6 language
    ROIs, nested ridge CV, group sign-flip tests (``jaxalign alice``).
"""
