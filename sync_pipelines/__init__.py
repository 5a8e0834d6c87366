"""sync_pipelines: Dagster assets that keep a school's Zoho CRM and Moodle LMS in step.

pandas keeps its default string storage in Python objects here, as it had it before pyarrow was
a dependency (pyarrow came for the mirror's fingerprints, :mod:`sync_pipelines.diff`): with
pyarrow installed, pandas would otherwise store every inferred text column in Arrow, which cannot
hold a lone surrogate (Zoho can send one; canonicalisation replaces it) and behaves differently
on mixed columns. The fingerprints convert to Arrow themselves, a batch at a time.
"""

import pandas as _pd

_pd.set_option("mode.string_storage", "python")
