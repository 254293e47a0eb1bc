"""Manifests: schema, validation, overrides and expansion into candidates."""

from slicert_ops.manifest.expand import Candidate, Expansion, candidate_id, expand
from slicert_ops.manifest.load import Experiment, load_manifest, parse_conf

__all__ = ["Candidate", "Expansion", "Experiment", "candidate_id", "expand", "load_manifest",
           "parse_conf"]
