"""What a phase's request would cost before any call of that model was made: its prompt
rendered from what is on disk, counted in tokens, plus ``max_tokens`` for the answer.

Token counts are the LLM layer's approximation (``estimate_tokens``: no tokenizer that
downloads files at run time).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pipeline.book import phases
from pipeline.book.phase_table import PHASE
from pipeline.book.workspace import Book
from pipeline.core.errors import UserError
from pipeline.core.rendering import render, render_messages
from pipeline.llm import estimate_tokens


@dataclass
class RequestEstimate:
    """Tokens a phase's request would send and receive; ``exact_prompt`` when every input
    was on disk (otherwise the missing inputs were counted at their upper bound)."""

    tokens_in: int
    tokens_out: int
    exact_prompt: bool


def request_estimate(book: Book, sid: str, phase: str) -> RequestEstimate:
    """The estimate of one LLM phase of scene ``sid`` (messages + output schema + answer)."""
    scene = book.scene(sid)
    spec = PHASE[phase]
    files = phases.layout(book, sid)[phase]
    max_out = book.config.model.max_tokens
    inputs, missing = {}, []
    for i in spec.inputs:
        try:
            inputs[i.name] = phases.load_input(files.inputs[i.name], phases.INPUT_MODELS[i.name])
        except UserError:
            missing.append(i)
    if not missing:
        ctx = phases.prompt_context(book, scene, phase, inputs)
        messages = render_messages(files.templates["system"], files.templates["phase"], ctx)
        schema = phases.schema_for(phase, scene, inputs, book.config.model.max_tokens,
                                   book.config.lint)
        text = "\n".join(m["content"] for m in messages) + json.dumps(schema)
        return RequestEstimate(estimate_tokens(text), max_out, True)
    system = render(files.templates["system"], phases.prompt_context(book, scene, phase, {}))
    with open(files.templates["phase"], encoding="utf-8") as fh:
        template = fh.read()
    state_tokens = estimate_tokens(book.state_path.read_text(encoding="utf-8"))
    # a missing input counts as much as its maker could write: an LLM phase's max_tokens,
    # a code phase's (preflight, commit: a state) the size of the book's initial state
    unknown = sum(max_out if PHASE[i.phase].llm else state_tokens for i in missing)
    known = "\n".join(json.dumps(v.model_dump()) if hasattr(v, "model_dump") else str(v)
                      for v in inputs.values())
    text = system + template + known + json.dumps(spec.answer_model.model_json_schema())
    return RequestEstimate(estimate_tokens(text) + unknown, max_out, False)



def cached_request(book: Book, sid: str, phase: str, attempt: int, cache) -> bool:
    """Whether the request LLM phase ``phase`` of scene ``sid`` would send now (its inputs as
    on disk, at ``attempt``) has an answer in ``cache`` (a ``ResponseCache``): then it costs
    nothing. False when an input is missing or unreadable."""
    from pipeline.book.runner import phase_request

    files = phases.layout(book, sid)[phase]
    try:
        inputs = {i.name: phases.load_input(files.inputs[i.name], phases.INPUT_MODELS[i.name])
                  for i in PHASE[phase].inputs}
        request = phase_request(book, book.scene(sid), phase, inputs, files.templates, attempt)
        return cache.get(request.request_hash()) is not None
    except (UserError, OSError, ValueError):
        return False
