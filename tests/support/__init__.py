"""Helpers the test modules share and a backend author would not need
(those are in ``popframe.testing``): one module per job.  The older
``tests/*_support.py`` modules stay where they are, since test modules
import them by those names."""
