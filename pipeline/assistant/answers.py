"""Routing a question to a warehouse query, and laying out the answer.

The facts (numbers, names, dates) come from SQL only. The LLM picks wording (a details
heading and a closing offer) from fixed choices, so a truth review of an answer checks
the SQL, whatever the model says. The layout follows :class:`AnswerRules`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .domain import LOCATIONS, Warehouse
from .rules import AnswerRules

RESULT_SET_RE = re.compile(r"\brs-[0-9a-z]+-\d+\b")
# "their"/"its" are left out on purpose: "below their reorder level" is not a follow-up.
_FOLLOW_UP_RE = re.compile(
    r"\b(those|these|them|they|that item|this item|that one|the same items)\b|\bit\W*$")
_DAYS_RE = re.compile(r"\blast\s+(\d{1,3})\s+days?\b")
_UNSUPPORTED = (
    (("forecast", "predict", "next month", "next quarter", "next year", "will we need",
      "projection"),
     "demand forecasting is not available; I only know stock, suppliers and movements"),
    (("sales revenue", "revenue", "profit", "margin", "customer"),
     "sales, revenue and customer data are not in the warehouse database"),
    (("employee", "staff", "shift", "salary"),
     "staffing data is not in the warehouse database"),
)
DETAIL_HEADINGS = ["Details:", "Breakdown:", "In detail:"]
FOLLOW_UPS = {
    "items": ["Ask me who supplies any of these items.",
              "I can also show the recent movements of these items.",
              "I can work out what restocking them would cost."],
    "suppliers": ["I can list the current stock of the items they supply.",
                  "Ask me what restocking these items would cost."],
    "movements": ["I can show the current stock of these items.",
                  "Ask me who supplies these items."],
    "none": ["Ask me about stock, items below reorder level, suppliers or movements."],
}


@dataclass
class Answer:
    """What a question resolved to, before layout."""

    route: str
    capability: str  # answered | unsupported | clarification
    direct: str
    details: list[str] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    kind: str | None = None  # items | suppliers | movements: makes a result set
    skus: list[str] = field(default_factory=list)
    supplier_ids: list[str] = field(default_factory=list)
    detail: str | None = None  # why unsupported / what to clarify
    note: str | None = None  # one plain sentence after the direct answer
    targets_from: str = "all"  # question | result_set | all

    @property
    def route_id(self) -> str:
        return f"route:{self.route}:v1"


def _names(names: list[str]) -> str:
    if not names:
        return ""
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _eur(x: float) -> str:
    return f"EUR {x:,.2f}"


def _unit(row: dict, qty: int) -> str:
    unit = row.get("unit", "unit")
    return unit if qty == 1 else unit + ("es" if unit.endswith("ch") else "s")


def matched_items(question: str, wh: Warehouse) -> list[dict]:
    """Items named in the question (by name, plural name or SKU), in order of mention."""
    q = question.lower()
    found = []
    for item in wh.items():
        name = item["name"].lower()
        # a plural name contains the singular; "safety glove" is the singular of a plural name
        tokens = (name, item["sku"].lower(), name[:-1] if name.endswith("s") else name)
        positions = [q.find(t) for t in tokens if t in q]
        if positions:
            found.append((min(positions), item))
    return [item for _, item in sorted(found, key=lambda p: p[0])]


class Router:
    """Turns a question (plus the session's result sets) into an :class:`Answer`."""

    def __init__(self, wh: Warehouse):
        self.wh = wh

    def answer(self, question: str, session: dict) -> Answer:
        """Route ``question`` within ``session`` (its result sets and semantic memory)."""
        q = " ".join(question.lower().split())
        for words, why in _UNSUPPORTED:
            if any(w in q for w in words):
                return self._unsupported(why)
        targets, source, problem = self._targets(question, q, session)
        if problem:
            return Answer("memory.clarify", "clarification", problem, detail=problem)
        answer = self._route(q, targets, source)
        answer.targets_from = source
        return answer

    def _route(self, q: str, targets: list[str] | None, source: str) -> Answer:
        if any(w in q for w in ("cost to reorder", "reorder cost", "cost to restock",
                                "restocking", "cost to bring", "what would it cost")):
            return self._reorder_cost(targets)
        if any(w in q for w in ("supplier", "supplies", "supplied", "vendor", "who sells")):
            return self._suppliers(targets)
        if any(w in q for w in ("movement", "shipment", "shipped", "received", "receipt",
                                "history", "moved")):
            match = _DAYS_RE.search(q)
            days = int(match.group(1)) if match else (7 if "last week" in q else 30)
            return self._movements(targets, max(1, min(days, 365)))
        if any(w in q for w in ("value", "worth")):
            return self._value(targets)
        if any(w in q for w in ("reorder", "below", "low stock", "running low", "short",
                                "need to order")):
            return self._low_stock(targets if source != "all" else None)
        for code, name in LOCATIONS:
            if code.lower() in q.split() or name.lower() in q:
                if any(w in q for w in ("stock", "hold", "on hand", "inventory", "items")):
                    return self._location(code, name)
        if any(w in q for w in ("how many", "stock", "on hand", "inventory", "quantity",
                                "left", "have we got", "do we have")):
            return self._stock(targets)
        return self._unsupported("no route answers this question yet")

    # -- targets ------------------------------------------------------------------
    def _targets(self, question: str, q: str,
                 session: dict) -> tuple[list[str] | None, str, str | None]:
        """(skus, where they came from, clarification needed) for the question."""
        named = matched_items(question, self.wh)
        if named:
            return [i["sku"] for i in named], "question", None
        sets = session.get("result_sets", {})
        explicit = RESULT_SET_RE.search(q)
        if explicit:
            rs = sets.get(explicit.group(0))
            if rs is None:
                known = ", ".join(sets) or "none yet"
                return None, "", (f"I don't know the result set {explicit.group(0)} in this "
                                  f"conversation (known: {known}); which items do you mean?")
            return self._skus_of(rs), "result_set", None
        if _FOLLOW_UP_RE.search(q):
            active = session.get("semantic_memory", {}).get("active_result_set_id")
            if not active or active not in sets:
                return None, "", ("Which items do you mean? There is no earlier result in "
                                  "this conversation to refer to.")
            return self._skus_of(sets[active]), "result_set", None
        return None, "all", None

    def _skus_of(self, rs: dict) -> list[str]:
        if rs.get("kind") == "suppliers":
            return self.wh.items_of_suppliers(rs.get("supplier_ids", []))
        return list(rs.get("skus", []))

    # -- routes ---------------------------------------------------------------------
    def _unsupported(self, why: str) -> Answer:
        return Answer(
            "fallback.unsupported", "unsupported", f"I can't answer that yet: {why}.",
            note=("I can tell you current stock, items below their reorder level, suppliers "
                  "and lead times, stock value, restocking cost and the movements of the last "
                  "30 days."),
            detail=why)

    def _low_stock(self, skus: list[str] | None) -> Answer:
        rows = self.wh.low_stock()
        if skus is not None:
            rows = [r for r in rows if r["sku"] in skus]
        entries = [{"item": r["item"], "sku": r["sku"], "on_hand": r["on_hand"],
                    "reorder_level": r["reorder_level"],
                    "shortfall": r["reorder_level"] - r["on_hand"], "supplier": r["supplier"]}
                   for r in rows]
        n = len(entries)
        if n == 0:
            direct = "No item is below its reorder level."
        elif n == 1:
            direct = f"1 item is below its reorder level: {entries[0]['item']}."
        else:
            direct = (f"{n} items are below their reorder level: "
                      f"{_names([e['item'] for e in entries])}.")
        details = [f"{e['item']} ({e['sku']}): {e['on_hand']} on hand, reorder level "
                   f"{e['reorder_level']}, short by {e['shortfall']}; supplier {e['supplier']}"
                   for e in entries]
        return Answer("inventory.low_stock", "answered", direct, details, entries, "items",
                      [e["sku"] for e in entries])

    def _stock(self, skus: list[str] | None) -> Answer:
        rows = self.wh.stock(skus)
        entries = [{"item": r["item"], "sku": r["sku"], "on_hand": r["on_hand"],
                    "north": r["north"], "south": r["south"], "unit": r["unit"],
                    "reorder_level": r["reorder_level"]} for r in rows]
        if skus is None:
            total = sum(e["on_hand"] for e in entries)
            low = sum(1 for e in entries if e["on_hand"] < e["reorder_level"])
            direct = (f"The warehouse holds {_plural(len(entries), 'item')} with {total} units "
                      f"on hand in total; {low} of them are below their reorder level.")
            entries.sort(key=lambda e: (-e["on_hand"], e["sku"]))
            route = "inventory.summary"
        elif len(entries) == 1:
            e = entries[0]
            verb = "is" if e["on_hand"] == 1 else "are"
            direct = (f"There {verb} {e['on_hand']} {_unit(e, e['on_hand'])} of {e['item']} on "
                      f"hand (North Hub {e['north']}, South Depot {e['south']}).")
            route = "inventory.item_stock"
        else:
            parts = [f"{e['item']} {e['on_hand']}" for e in entries]
            direct = f"On hand: {_names(parts)}."
            route = "inventory.item_stock"
        details = [f"{e['item']} ({e['sku']}): {e['on_hand']} {_unit(e, e['on_hand'])} "
                   f"(North Hub {e['north']}, South Depot {e['south']}), reorder level "
                   f"{e['reorder_level']}" for e in entries]
        if skus is not None and len(entries) == 1:
            details = []
        return Answer(route, "answered", direct, details, entries, "items",
                      [e["sku"] for e in entries])

    def _location(self, code: str, name: str) -> Answer:
        rows = self.wh.stock_at(code)
        entries = [{"item": r["item"], "sku": r["sku"], "on_hand": r["on_hand"],
                    "location": code} for r in rows]
        total = sum(e["on_hand"] for e in entries)
        direct = f"{name} holds {total} units across {_plural(len(entries), 'item')}."
        entries.sort(key=lambda e: (-e["on_hand"], e["sku"]))
        details = [f"{e['item']} ({e['sku']}): {e['on_hand']}" for e in entries]
        return Answer("inventory.by_location", "answered", direct, details, entries, "items",
                      [e["sku"] for e in entries])

    def _suppliers(self, skus: list[str] | None) -> Answer:
        if skus is None:
            sups = self.wh.suppliers_of([i["sku"] for i in self.wh.items()])
        else:
            sups = self.wh.suppliers_of(skus)
        entries = sups
        if skus is not None and len(skus) == 1 and len(sups) == 1:
            s = sups[0]
            direct = (f"{s['items'][0]} is supplied by {s['supplier']} ({s['city']}, lead time "
                      f"{s['lead_time_days']} days).")
        elif skus is None:
            direct = (f"The warehouse works with {_plural(len(sups), 'supplier')}: "
                      f"{_names([s['supplier'] for s in sups])}.")
        elif not sups:
            direct = "None of these items has a supplier on record."
        else:
            direct = (f"{_plural(len(sups), 'supplier')} cover these items: "
                      + _names([f"{s['supplier']} ({', '.join(s['items'])})" for s in sups])
                      + ".")
        details = [f"{s['supplier']} ({s['supplier_id']}, {s['city']}): lead time "
                   f"{s['lead_time_days']} days; supplies {', '.join(s['items'])}"
                   for s in sups]
        return Answer("suppliers.for_items" if skus is not None else "suppliers.list",
                      "answered", direct, details, entries, "suppliers",
                      supplier_ids=[s["supplier_id"] for s in sups])

    def _movements(self, skus: list[str] | None, days: int) -> Answer:
        rows = self.wh.movements(skus, days)
        received = sum(r["qty"] for r in rows if r["kind"] == "in")
        shipped = sum(r["qty"] for r in rows if r["kind"] == "out")
        span = f"in the {days} days to {self.wh.data_as_of}"
        if skus is not None and len(skus) == 1:
            name = self.wh.stock(skus)[0]["item"] if self.wh.stock(skus) else skus[0]
            subject = name
        elif skus is None:
            subject = "The warehouse"
        else:
            subject = f"These {_plural(len(skus), 'item')}"
        direct = (f"{subject} had {_plural(len(rows), 'movement')} {span}: {received} units "
                  f"received and {shipped} shipped.")
        locs = dict(LOCATIONS)
        details = [f"{r['date']} {r['item']} at {locs.get(r['location'], r['location'])}: "
                   f"{'received' if r['kind'] == 'in' else 'shipped'} {r['qty']} ({r['ref']})"
                   for r in rows]
        return Answer("movements.recent", "answered", direct, details, rows, "movements",
                      sorted({r["sku"] for r in rows}) if skus is None else list(skus))

    def _value(self, skus: list[str] | None) -> Answer:
        rows = self.wh.stock(skus)
        entries = [{"item": r["item"], "sku": r["sku"], "on_hand": r["on_hand"],
                    "unit_cost": r["unit_cost"],
                    "value": round(r["on_hand"] * r["unit_cost"], 2)} for r in rows]
        total = round(sum(e["value"] for e in entries), 2)
        if skus is None:
            direct = f"The stock on hand is worth {_eur(total)} in total."
        elif len(entries) == 1:
            e = entries[0]
            direct = (f"The stock of {e['item']} on hand is worth {_eur(total)} ({e['on_hand']} x "
                      f"{_eur(e['unit_cost'])}).")
        else:
            direct = f"The stock of these {len(entries)} items is worth {_eur(total)}."
        entries.sort(key=lambda e: (-e["value"], e["sku"]))
        details = [f"{e['item']}: {e['on_hand']} x {_eur(e['unit_cost'])} = {_eur(e['value'])}"
                   for e in entries]
        return Answer("inventory.value", "answered", direct, details, entries, "items",
                      [e["sku"] for e in entries])

    def _reorder_cost(self, skus: list[str] | None) -> Answer:
        rows = self.wh.stock(skus) if skus is not None else self.wh.low_stock()
        entries = []
        for r in rows:
            qty = r["reorder_level"] - r["on_hand"]
            if qty <= 0:
                continue  # stocked at or above its level: nothing to reorder
            entries.append({"item": r["item"], "sku": r["sku"], "order_qty": qty,
                            "unit_cost": r["unit_cost"], "cost": round(qty * r["unit_cost"], 2),
                            "supplier": r["supplier"]})
        total = round(sum(e["cost"] for e in entries), 2)
        units = sum(e["order_qty"] for e in entries)
        if not entries:
            direct = "Nothing needs reordering: every item is at or above its reorder level."
        else:
            direct = (f"Bringing {_plural(len(entries), 'item')} back to their reorder level "
                      f"costs {_eur(total)} for {units} units.")
        note = None
        if len(rows) > len(entries) and entries:
            note = (f"The other {len(rows) - len(entries)} of the {len(rows)} items are stocked "
                    f"at or above their reorder level.")
        details = [f"{e['item']}: order {e['order_qty']} x {_eur(e['unit_cost'])} = "
                   f"{_eur(e['cost'])} from {e['supplier']}" for e in entries]
        return Answer("inventory.reorder_cost", "answered", direct, details, entries, "items",
                      [e["sku"] for e in entries], note=note)


def wording_schema(kind: str | None) -> dict:
    """The JSON Schema of the LLM's wording choice for an answer of ``kind``."""
    return {
        "type": "object",
        "properties": {
            "details_heading": {"enum": DETAIL_HEADINGS},
            "follow_up": {"enum": FOLLOW_UPS.get(kind or "none", FOLLOW_UPS["none"])},
        },
        "required": ["details_heading", "follow_up"],
        "additionalProperties": False,
    }


def default_wording(kind: str | None) -> dict:
    """The wording used when the LLM cannot be reached."""
    return {"details_heading": DETAIL_HEADINGS[0],
            "follow_up": FOLLOW_UPS.get(kind or "none", FOLLOW_UPS["none"])[0]}


def layout(answer: Answer, rules: AnswerRules, wording: dict, data_as_of: str,
           result_set_id: str | None) -> str:
    """The visible reply: direct answer, details, data date, follow-up; per ``rules``."""
    blocks: list[list[str]] = []
    if rules.direct_answer_first:
        blocks.append([answer.direct])
    else:
        blocks.append(["Let me check the warehouse records for you."])
    if answer.note:
        blocks.append([answer.note])
    if answer.details:
        shown = answer.details[: rules.max_list_items]
        lines = [wording["details_heading"]] + [f"- {d}" for d in shown]
        if len(answer.details) > len(shown):
            lines.append(f"- ... and {len(answer.details) - len(shown)} more.")
        blocks.append(lines)
    if not rules.direct_answer_first:
        blocks.append([f"In short: {answer.direct}"])
    if rules.state_data_date:
        blocks.append([f"Data as of {data_as_of} (end-of-day warehouse snapshot)."])
    if rules.show_route_ids:
        blocks.append([f"[route {answer.route_id} | result set {result_set_id or '-'}]"])
    if rules.include_raw_json and answer.entries:
        blocks.append([json.dumps(answer.entries, ensure_ascii=False)])
    if rules.follow_up_offer:
        blocks.append([wording["follow_up"]])
    if not rules.layered_answer:
        return " ".join(line for block in blocks for line in block)
    return "\n\n".join("\n".join(block) for block in blocks)
