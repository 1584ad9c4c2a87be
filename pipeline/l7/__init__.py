"""L7: the scene prompt map runner.

For one session it turns the scenes of ``scenes_v2.json`` (from layer L6) into image
prompts: per scene context, N prompt candidates from the LLM, weighted scoring against a
score spec (rule criteria in code, judgement criteria by an LLM judge), selection with a
trace, a continuity audit between adjacent scenes, selective revision of the scenes with
findings, and an atomic export of the spec's output set, with Gate-In/Gate-Out reports.

The stages are doit tasks (``targets/l7/tasks.py``); ``python -m pipeline.l7`` runs them.
"""
