"""Generate readable values that satisfy a JSON Schema (as pydantic v2 emits it).

The offline provider uses this: the words come from the request's own messages
(:class:`Vocabulary`), the randomness from a seeded ``random.Random``, so the same request
always yields the same instance.
"""

from __future__ import annotations

import copy
import math
import random
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.hashing import canonical_json

# Beyond this nesting depth, or once a $ref recurses, optional branches are cut short
# (empty arrays, null options) so recursive models end.
MAX_DEPTH = 12

CONNECTIVES = (
    "Later,",
    "For a moment,",
    "Meanwhile,",
    "Then,",
    "After a while,",
    "Even so,",
    "Still,",
    "At last,",
    "Without a word,",
    "Soon,",
)

_STOPWORDS = frozenset(
    """a about after all an and any are as at be been before but by can could did do does for
    from had has have he her him his how i if in into is it its just me more my no not now of
    on or our out over she so some than that the their them then there these they this to up
    very was we were what when where which who why will with would you your must should each
    json only reply return write give use using output schema field fields answer""".split()
)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_NAME_RE = re.compile(r"\b[A-Z][a-z]{2,}\b")
_WORD_RE = re.compile(r"[a-z]{3,}")

_DEFAULT_SENTENCES = (
    "The lamp flickered in the quiet room.",
    "Rain moved across the harbour in long grey sheets.",
    "Nobody spoke until the kettle began to sing.",
    "The old map was folded along a line that no longer mattered.",
    "A door closed somewhere below and the house settled.",
    "She counted the steps twice and still got a different number.",
)
_DEFAULT_NAMES = ("Mara", "Tomas", "Ines", "Aldo")
_DEFAULT_WORDS = ("lantern", "harbour", "letter", "river", "window", "garden", "bridge", "storm")

_ID_SUFFIXES = ("_id", "_ids", "Id", "Ids")
_PROSE_HINTS = ("prose", "text", "body", "content")
_SENTENCE_HINTS = (
    "summary", "goal", "reason", "description", "fact", "beat", "note", "outcome", "event",
    "conflict", "motivation", "premise", "logline", "synopsis", "rationale", "explanation",
    "question", "answer", "change", "stakes", "hook", "detail", "observation",
)


def _sentence_case(text: str) -> str:
    text = text.strip()
    if text and text[-1] not in ".!?\"'":
        text += "."
    return text[:1].upper() + text[1:]


@dataclass
class Vocabulary:
    """The material generated text is built from: sentences, capitalised names and words."""

    sentences: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Vocabulary:
        """Collect a vocabulary from ``texts``, falling back to a small built-in one."""
        sentences: dict[str, None] = {}
        names: dict[str, None] = {}
        words: dict[str, None] = {}
        for text in texts:
            for chunk in _SENTENCE_SPLIT.split(text):
                chunk = chunk.strip()
                if not chunk:
                    continue
                tokens = chunk.split()
                # Sentences with template or schema syntax would read as noise.
                if len(tokens) >= 4 and not any(c in chunk for c in "{}:|"):
                    sentences[_sentence_case(chunk)] = None
                # A capitalised word not starting its sentence is most likely a name.
                for match in _NAME_RE.finditer(chunk):
                    if match.start() > 0 and match.group().lower() not in _STOPWORDS:
                        names[match.group()] = None
            for word in _WORD_RE.findall(text.lower()):
                if word not in _STOPWORDS:
                    words[word] = None
        # Names keep their capital inside phrases ("the letter Mara kept").
        cased = {name.lower(): name for name in names}
        vocab = cls(list(sentences), list(names), [cased.get(w, w) for w in words])
        if not vocab.names:
            vocab.names = list(_DEFAULT_NAMES)
        if not vocab.words:
            vocab.words = list(_DEFAULT_WORDS)
        if len(vocab.sentences) < 4:
            vocab.sentences.extend(vocab._synthetic_sentences(6 - len(vocab.sentences)))
        return vocab

    @classmethod
    def from_messages(cls, messages: Iterable[dict]) -> Vocabulary:
        """Collect a vocabulary from chat messages' string contents."""
        texts = []
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                texts.append(content)
        return cls.from_texts(texts)

    def _synthetic_sentences(self, count: int) -> list[str]:
        # Thin prompts still need a few sentences; build them from the prompt's own words.
        nouns = [w for w in self.words if w not in self.names] or list(_DEFAULT_WORDS)
        if self.words == list(_DEFAULT_WORDS):
            return list(_DEFAULT_SENTENCES[:count])
        templates = (
            "{n} looked at the {a} for a long time.",
            "The {a} was closer to the {b} than anyone had said.",
            "{n} said nothing about the {a}.",
            "Somewhere beyond the {b}, {n} was waiting.",
            "It had always been about the {a}.",
            "{n} turned the {b} over and put it down again.",
        )
        out = []
        for i in range(count):
            out.append(
                templates[i % len(templates)].format(
                    n=self.names[i % len(self.names)],
                    a=nouns[i % len(nouns)],
                    b=nouns[(i + 1) % len(nouns)],
                )
            )
        return out


# ---------------------------------------------------------------- text generators


def sentence(rng: random.Random, vocab: Vocabulary) -> str:
    """One sentence from the vocabulary."""
    return rng.choice(vocab.sentences)


def phrase(rng: random.Random, vocab: Vocabulary, lo: int = 2, hi: int = 4) -> str:
    """A short phrase of vocabulary words, first letter capitalised."""
    count = min(rng.randint(lo, hi), len(vocab.words))
    text = " ".join(rng.sample(vocab.words, count))
    return text[:1].upper() + text[1:]


def slug(rng: random.Random, vocab: Vocabulary, sep: str = "_", parts: int = 2) -> str:
    """A lowercase ASCII slug of vocabulary words, e.g. ``harbour_letter``."""
    words = [w.lower() for w in vocab.words if w.isascii()] or list(_DEFAULT_WORDS)
    return sep.join(rng.sample(words, min(parts, len(words))))


def _vary(rng: random.Random, vocab: Vocabulary, text: str) -> str:
    if rng.random() >= 0.3:
        return text
    first = text.split(" ", 1)[0].strip(",;\"'")
    # Keep names and "I" capitalised after the connective.
    if first not in vocab.names and first != "I" and not first.isupper():
        text = text[:1].lower() + text[1:]
    return f"{rng.choice(CONNECTIVES)} {text}"


def prose(
    rng: random.Random, vocab: Vocabulary, min_words: int = 120, paragraphs: int | None = None
) -> str:
    """Paragraphs of vocabulary sentences, at least ``min_words`` words and two paragraphs."""
    target = paragraphs if paragraphs is not None else rng.randint(2, 4)
    deck: list[str] = []
    paras: list[str] = []
    total = 0
    while len(paras) < max(target, 2) or total < min_words:
        sentences = []
        for _ in range(rng.randint(3, 5)):
            if not deck:  # deal sentences in shuffled rounds so neighbours rarely repeat
                deck = rng.sample(vocab.sentences, len(vocab.sentences))
            sentences.append(_vary(rng, vocab, deck.pop()))
        para = " ".join(sentences)
        total += len(para.split())
        paras.append(para)
    return "\n\n".join(paras)


# ---------------------------------------------------------------- schema filling


def _hint_kind(name: str) -> str:
    lowered = name.lower()
    if lowered in ("id", "slug", "key") or name.endswith(_ID_SUFFIXES) or "slug" in lowered:
        return "slug"
    if any(h in lowered for h in _PROSE_HINTS):
        return "prose"
    if any(h in lowered for h in _SENTENCE_HINTS):
        return "sentence"
    if "name" in lowered:
        return "name"
    if "title" in lowered:
        return "title"
    return "phrase"


def _fit_length(text: str, lo: int, hi: int | None, pad: str) -> str:
    while len(text) < lo:
        text += pad
    if hi is not None and len(text) > hi:
        cut = text[:hi]
        # Prefer a word boundary when one is reasonably close to the limit.
        space = cut.rfind(" ")
        if space >= max(lo, hi // 2):
            cut = cut[:space]
        text = cut.rstrip() if len(cut.rstrip()) >= lo else cut
    return text


# What a line of text may not hold in a JSON string written without escapes.
_UNFIT = re.compile(r'["\\\x00-\x1f]')


def _fullmatch(pattern: str, text: str) -> bool:
    try:
        return re.fullmatch(pattern, text) is not None
    except re.error:
        return False


def _enum_key(schema: Any) -> list | None:
    """The choices of an object schema's ``id`` when it is an enum (else None)."""
    if not isinstance(schema, dict) or schema.get("type") not in (None, "object"):
        return None
    key = (schema.get("properties") or {}).get("id")
    if isinstance(key, dict) and isinstance(key.get("enum"), list) and key["enum"]:
        return list(key["enum"])
    return None


def _matches(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return True  # a pattern Python cannot compile cannot be checked here either


class _Filler:
    def __init__(self, root: Any, rng: random.Random, vocab: Vocabulary):
        self.root = root
        self.rng = rng
        self.vocab = vocab
        self.refs: list[str] = []  # the $refs being expanded, outermost first

    def cut(self, path: tuple) -> bool:
        """True where optional content should be left out so generation terminates."""
        return len(path) > MAX_DEPTH or len(self.refs) != len(set(self.refs))

    # -- references and combinators

    def pointer(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise ValueError(f"unsupported $ref {ref!r} (only local references)")
        node = self.root
        for part in ref[1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    def resolve(self, schema: Any) -> Any:
        for _ in range(64):
            if not isinstance(schema, dict) or "$ref" not in schema:
                break
            target = self.pointer(schema["$ref"])
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **siblings} if isinstance(target, dict) else target
        else:
            raise ValueError("$ref chain too long")
        if isinstance(schema, dict) and "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self.resolve(part)
                if not isinstance(part, dict):
                    continue
                for key, value in part.items():
                    if key == "properties":
                        merged["properties"] = {**merged.get("properties", {}), **value}
                    elif key == "required":
                        merged["required"] = sorted({*merged.get("required", []), *value})
                    else:
                        merged.setdefault(key, value)
            schema = merged
        return schema

    # -- dispatch

    def fill(self, schema: Any, path: tuple, name: str) -> Any:
        if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            self.refs.append(schema["$ref"])
            try:
                return self.fill_resolved(self.resolve(schema), path, name)
            finally:
                self.refs.pop()
        return self.fill_resolved(self.resolve(schema), path, name)

    def fill_resolved(self, schema: Any, path: tuple, name: str) -> Any:
        if schema is True or schema == {}:
            return phrase(self.rng, self.vocab)
        if not isinstance(schema, dict):
            raise ValueError(f"{_json_path(path)}: schema allows no value")
        if "const" in schema:
            return copy.deepcopy(schema["const"])
        if "enum" in schema:
            return copy.deepcopy(self.rng.choice(schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.fill(self.pick_option(schema[key], path), path, name)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = self.pick_type(kind, path)
        if kind is None:
            kind = self.infer_type(schema)
            if kind is None:
                if "default" in schema:
                    return copy.deepcopy(schema["default"])
                return phrase(self.rng, self.vocab)
        handler = getattr(self, f"fill_{kind}", None)
        if handler is None:
            raise ValueError(f"{_json_path(path)}: unsupported type {kind!r}")
        return handler(schema, path, name)

    def pick_option(self, options: list, path: tuple) -> Any:
        """Usually the first non-null option; null only if offered (and sometimes)."""

        def is_null(option: Any) -> bool:
            resolved = self.resolve(option)
            return isinstance(resolved, dict) and resolved.get("type") == "null"

        nulls = [o for o in options if is_null(o)]
        others = [o for o in options if not is_null(o)]
        roll = self.rng.random()
        if nulls and (not others or roll < 0.1 or self.cut(path)):
            return nulls[0]
        if len(others) > 1 and roll > 0.85:
            return self.rng.choice(others[1:])
        return others[0]

    def pick_type(self, kinds: list, path: tuple) -> str:
        others = [k for k in kinds if k != "null"]
        if "null" in kinds and (not others or self.rng.random() < 0.1 or self.cut(path)):
            return "null"
        return others[0]

    @staticmethod
    def infer_type(schema: dict) -> str | None:
        if {"properties", "additionalProperties", "required"} & schema.keys():
            return "object"
        if {"items", "prefixItems", "minItems", "maxItems"} & schema.keys():
            return "array"
        if {"minLength", "maxLength", "pattern", "format"} & schema.keys():
            return "string"
        if {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"} & schema.keys():
            return "number"
        return None

    # -- containers

    def fill_object(self, schema: dict, path: tuple, name: str) -> dict:
        props = schema.get("properties", {})
        out = {key: self.fill(sub, (*path, key), key) for key, sub in props.items()}
        extra = schema.get("additionalProperties", True)
        for key in schema.get("required", []):
            if key not in out:
                sub = extra if isinstance(extra, dict) else {}
                out[key] = self.fill(sub, (*path, key), key)
        lo = schema.get("minProperties", 0)
        hi = schema.get("maxProperties")
        if isinstance(extra, dict) and not props:
            # A mapping (dict[str, X]): a few slug keys; values take the mapping's name hint.
            count = self.rng.randint(max(lo, 2), max(lo, 3))
            if hi is not None:
                count = min(count, hi)
            while len(out) < count:
                key = slug(self.rng, self.vocab, parts=1 + len(out) // 4)
                if key not in out:
                    out[key] = self.fill(extra, (*path, key), name)
        elif extra is not False:
            while len(out) < lo:
                out[f"extra_{len(out)}"] = phrase(self.rng, self.vocab)
        return out

    def fill_array(self, schema: dict, path: tuple, name: str) -> list:
        lo = schema.get("minItems", 0)
        hi = schema.get("maxItems")
        if self.cut(path):
            count = lo
        else:
            low = max(lo, 2 if hi is None else min(2, hi))
            high = max(lo, 4) if hi is None else min(hi, max(lo, 4))
            count = self.rng.randint(low, max(low, high))
        prefix = schema.get("prefixItems", [])
        out = [self.fill(sub, (*path, i), name) for i, sub in enumerate(prefix[:count])]
        items = schema.get("items", {})
        if items is False:
            return out
        unique = bool(schema.get("uniqueItems"))
        resolved = self.resolve(items)
        if isinstance(resolved, dict) and "enum" in resolved:
            # Distinct enum values read better and are what most enum lists mean.
            enum = resolved["enum"]
            seen = {canonical_json(v) for v in out}
            pool = [v for v in enum if canonical_json(v) not in seen]
            take = min(count - len(out), len(pool))
            out.extend(copy.deepcopy(self.rng.sample(pool, take)))
            while len(out) < lo and not unique and enum:
                out.append(copy.deepcopy(self.rng.choice(enum)))
            return out
        keys = _enum_key(resolved)
        if keys:
            # Objects named by an enum id (one change per character): each takes its own,
            # as a list of such records means; no grammar can say so, a model is re-asked.
            count = min(count, len(keys))
            for key in self.rng.sample(keys, count):
                value = self.fill(items, (*path, len(out)), name)
                value["id"] = copy.deepcopy(key)
                out.append(value)
            return out
        seen = {canonical_json(v) for v in out}
        while len(out) < count:
            index = len(out)
            value = self.fill(items, (*path, index), name)
            for _ in range(8):  # avoid repeats: always for uniqueItems, when cheap otherwise
                if canonical_json(value) not in seen:
                    break
                value = self.fill(items, (*path, index), name)
            key = canonical_json(value)
            if key in seen and unique:
                if len(out) >= lo:
                    break
            seen.add(key)
            out.append(value)
        return out

    # -- scalars

    def fill_string(self, schema: dict, path: tuple, name: str) -> str:
        lo = schema.get("minLength", 0)
        hi = schema.get("maxLength")
        fmt = schema.get("format")
        if fmt in _FORMATS:
            return _FORMATS[fmt](self.rng, self.vocab)
        pattern = schema.get("pattern")
        kind = _hint_kind(name)
        if pattern is not None:
            if kind != "slug":  # a line of text (a sentence, a title) that fits the pattern
                text = self.line(pattern, kind, lo, hi)
                if text is not None:
                    return text
            return self.pattern_string(pattern, lo, hi)
        if kind == "slug":
            # three words: an id must stay new along a long book (two words from a
            # scene's bounded vocabulary ran out of new thread ids after 600 scenes)
            return _fit_length(slug(self.rng, self.vocab, parts=3), lo, hi, "_x")
        return _fit_length(self.text(kind, lo), lo, hi, " ")

    def text(self, kind: str, lo: int) -> str:
        """Readable text of ``kind`` (prose, a sentence, a name, a title, a phrase), at
        least ``lo`` characters long."""
        if kind == "prose":
            text = prose(self.rng, self.vocab)
        elif kind == "sentence":
            text = sentence(self.rng, self.vocab)
        elif kind == "name":
            text = self.rng.choice(self.vocab.names)
        elif kind == "title":
            text = phrase(self.rng, self.vocab).title()
        else:
            text = phrase(self.rng, self.vocab)
        while len(text) < lo:
            text += " " + sentence(self.rng, self.vocab)
        return text

    def line(self, pattern: str, kind: str, lo: int, hi: int | None) -> str | None:
        """Readable text of ``kind`` that matches ``pattern`` whole (quotes, backslashes and
        control characters left out, sentence case), or None when none is found."""
        for _ in range(4):
            text = " ".join(_UNFIT.sub("", self.text(kind, lo)).split())
            text = _fit_length(text[:1].upper() + text[1:], lo, hi, ".")
            if _fullmatch(pattern, text):
                return text
        return None

    def pattern_string(self, pattern: str, lo: int, hi: int | None) -> str:
        rng, vocab = self.rng, self.vocab
        candidates: list[str] = []
        for _ in range(6):
            a, b, c = (slug(rng, vocab, parts=1) for _ in range(3))
            candidates += [  # three words first: ids stay new along a long book
                f"{a}_{b}_{c}", f"{a}_{b}", f"{a}-{b}", a, f"{a}{b}", f"{a}_{rng.randint(1, 99)}",
                f"{a}{rng.randint(1, 99)}", a.capitalize(), a.upper(), f"{a} {b}",
                str(rng.randint(1, 999)),
            ]
        fitted = [_fit_length(c, lo, hi, "x") for c in candidates]
        # Prefer a whole-string match (slug patterns); JSON Schema itself only needs a search.
        for text in fitted:
            try:
                if re.fullmatch(pattern, text):
                    return text
            except re.error:
                return text
        for text in fitted:
            if _matches(pattern, text):
                return text
        return fitted[0]

    def fill_integer(self, schema: dict, path: tuple, name: str) -> int:
        lo = schema.get("minimum")
        hi = schema.get("maximum")
        if "exclusiveMinimum" in schema:
            bound = math.floor(schema["exclusiveMinimum"]) + 1
            lo = bound if lo is None else max(lo, bound)
        if "exclusiveMaximum" in schema:
            bound = math.ceil(schema["exclusiveMaximum"]) - 1
            hi = bound if hi is None else min(hi, bound)
        lo = None if lo is None else math.ceil(lo)
        hi = None if hi is None else math.floor(hi)
        if lo is None and hi is None:
            lo, hi = 1, 10
        elif lo is None:
            lo = 1 if hi >= 1 else hi - 9
        elif hi is None:
            hi = lo + 9
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            first, last = math.ceil(lo / step), math.floor(hi / step)
            if first <= last:
                return self.rng.randint(first, last) * step
        return self.rng.randint(lo, max(lo, hi))

    def fill_number(self, schema: dict, path: tuple, name: str) -> float:
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        if lo is None and hi is None:
            lo, hi = 0.0, 10.0
        elif lo is None:
            lo = min(0.0, hi - 10.0)
        elif hi is None:
            hi = lo + 10.0
        step = schema.get("multipleOf")
        if step:
            first, last = math.ceil(lo / step), math.floor(hi / step)
            for k in (self.rng.randint(first, max(first, last)), first, last):
                value = k * step
                if _in_range(value, schema):
                    return value
        for _ in range(16):
            value = round(self.rng.uniform(lo, hi), 2)
            if _in_range(value, schema):
                return value
        return (lo + hi) / 2

    def fill_boolean(self, schema: dict, path: tuple, name: str) -> bool:
        return self.rng.random() < 0.5

    def fill_null(self, schema: dict, path: tuple, name: str) -> None:
        return None


def _in_range(value: float, schema: dict) -> bool:
    if "minimum" in schema and value < schema["minimum"]:
        return False
    if "maximum" in schema and value > schema["maximum"]:
        return False
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        return False
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        return False
    return True


def _json_path(path: tuple) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _date(rng: random.Random) -> str:
    return f"20{rng.randint(20, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _time(rng: random.Random) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"


_FORMATS = {
    "date": lambda rng, vocab: _date(rng),
    "time": lambda rng, vocab: _time(rng),
    "date-time": lambda rng, vocab: f"{_date(rng)}T{_time(rng)}",
    "duration": lambda rng, vocab: f"PT{rng.randint(1, 59)}M",
    "email": lambda rng, vocab: f"{slug(rng, vocab, sep='.')}@example.com",
    "uri": lambda rng, vocab: f"https://example.com/{slug(rng, vocab, sep='-')}",
    "url": lambda rng, vocab: f"https://example.com/{slug(rng, vocab, sep='-')}",
    "uuid": lambda rng, vocab: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    "hostname": lambda rng, vocab: f"{slug(rng, vocab, sep='-')}.example.com",
    "ipv4": lambda rng, vocab: ".".join(["10", *(str(rng.randint(1, 254)) for _ in range(3))]),
}


def fill(
    schema: Any,
    rng: random.Random,
    vocab: Vocabulary,
    path: tuple = (),
    *,
    root: Any = None,
) -> Any:
    """Generate one instance of ``schema``.

    ``path`` is where the schema sits (keys and indexes); its last key is the name hint
    for strings (``prose`` gets paragraphs, ``summary`` a sentence, ``*_id`` a slug).
    ``root`` is the document ``$ref`` pointers resolve against (default: ``schema``).
    """
    name = next((p for p in reversed(path) if isinstance(p, str)), "")
    return _Filler(schema if root is None else root, rng, vocab).fill(schema, path, name)


def fill_valid(schema: dict, rng: random.Random, vocab: Vocabulary, tries: int = 8) -> Any:
    """Like :func:`fill`, but retries until the instance validates (Draft 2020-12).

    Returns the last candidate if none validates, so the caller's own validation reports it.
    """
    from jsonschema import Draft202012Validator  # loads with the first answer

    validator = Draft202012Validator(schema)
    value = None
    for _ in range(max(1, tries)):
        value = fill(schema, rng, vocab)
        if validator.is_valid(value):
            return value
    return value
