"""Suite-wide test settings: the generated (hypothesis) cases are derandomized -- the same
cases every run, so a red CI run reproduces -- unless HYPOTHESIS_PROFILE=random is set."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("derandomized", derandomize=True)
settings.register_profile("random", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "derandomized"))
