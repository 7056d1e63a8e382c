"""Per-op costs of a model on a target: counted, measured through the bench runner, estimated.

`profile(ProfileOptions(model, target, ...))` returns a `ProfileResult`; `to_dict()` is the
documented JSON, `report.to_text` the table, `html.to_html` the self-contained report.
"""

from tflc.profile.core import (
    OpProfile,
    ProfileOptions,
    ProfileResult,
    ProfileTotal,
    profile,
    profile_models,
    render,
)

__all__ = ["OpProfile", "ProfileOptions", "ProfileResult", "ProfileTotal", "profile",
           "profile_models", "render"]
