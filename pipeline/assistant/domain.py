"""The example domain of the reference assistant: a small warehouse in an embedded SQLite DB.

Seeded deterministically (fixed rows, movements from a fixed-seed generator) with one
fixed "data as of" date, so every answer (and every truth review written against it) is
reproducible on any machine. Each query returns plain dict rows; wording is done elsewhere.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import threading
from typing import Any

DATA_AS_OF = "2024-06-30"

SUPPLIERS = [
    ("SUP-01", "Nordpack GmbH", "Hamburg", 5),
    ("SUP-02", "Atlas Safety Ltd", "Leeds", 7),
    ("SUP-03", "Voltline Power", "Lyon", 14),
    ("SUP-04", "LabelWorks", "Rotterdam", 3),
]

# sku, name, category, unit, supplier, reorder level, unit cost (EUR)
ITEMS = [
    ("PKG-TAPE", "Packing Tape", "packaging", "roll", "SUP-01", 200, 1.80),
    ("PKG-BOXL", "Cardboard Box L", "packaging", "piece", "SUP-01", 500, 0.95),
    ("PKG-FILM", "Stretch Film", "packaging", "roll", "SUP-01", 120, 14.50),
    ("SAF-GLOV", "Safety Gloves", "safety", "pair", "SUP-02", 150, 3.20),
    ("SAF-VEST", "Hi-Vis Vest", "safety", "piece", "SUP-02", 60, 6.75),
    ("TLS-CUTR", "Box Cutter", "tools", "piece", "SUP-02", 40, 4.10),
    ("EQP-JACK", "Pallet Jack", "equipment", "piece", "SUP-03", 4, 389.00),
    ("EQP-BATT", "Forklift Battery", "equipment", "piece", "SUP-03", 2, 2450.00),
    ("LBL-BARC", "Barcode Labels", "labels", "roll", "SUP-04", 80, 9.90),
]

LOCATIONS = [("NORTH", "North Hub"), ("SOUTH", "South Depot")]

# on hand per (sku, location) at DATA_AS_OF
STOCK = {
    "PKG-TAPE": (75, 55), "PKG-BOXL": (700, 420), "PKG-FILM": (90, 75),
    "SAF-GLOV": (50, 40), "SAF-VEST": (45, 38), "TLS-CUTR": (30, 25),
    "EQP-JACK": (3, 3), "EQP-BATT": (1, 0), "LBL-BARC": (60, 55),
}

_SCHEMA = """
create table suppliers (id text primary key, name text not null, city text not null,
                        lead_time_days integer not null);
create table items (sku text primary key, name text not null unique, category text not null,
                    unit text not null, supplier_id text not null references suppliers(id),
                    reorder_level integer not null, unit_cost real not null);
create table locations (code text primary key, name text not null);
create table stock (sku text not null references items(sku),
                    location text not null references locations(code),
                    qty integer not null, primary key (sku, location));
create table movements (id integer primary key, date text not null,
                        sku text not null references items(sku),
                        location text not null references locations(code),
                        kind text not null check (kind in ('in', 'out')),
                        qty integer not null, ref text not null);
"""


def _movements() -> list[tuple]:
    """Thirty days of receipts and shipments, the same on every machine (fixed seed)."""
    rng = random.Random(20240630)
    end = dt.date.fromisoformat(DATA_AS_OF)
    rows = []
    for day in range(29, -1, -1):
        date = (end - dt.timedelta(days=day)).isoformat()
        for _ in range(rng.randint(1, 2)):
            sku = rng.choice(ITEMS)[0]
            loc = rng.choice(LOCATIONS)[0]
            kind = "in" if rng.random() < 0.4 else "out"
            qty = rng.randint(1, 3) if sku.startswith("EQP") else rng.randint(5, 60)
            ref = f"{'PO' if kind == 'in' else 'SO'}-{rng.randint(10000, 99999)}"
            rows.append((len(rows) + 1, date, sku, loc, kind, qty, ref))
    return rows


class Warehouse:
    """The seeded warehouse DB (in memory); read-only queries behind one lock."""

    def __init__(self) -> None:
        self.data_as_of = DATA_AS_OF
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(_SCHEMA)
        self._db.executemany("insert into suppliers values (?,?,?,?)", SUPPLIERS)
        self._db.executemany("insert into items values (?,?,?,?,?,?,?)", ITEMS)
        self._db.executemany("insert into locations values (?,?)", LOCATIONS)
        self._db.executemany(
            "insert into stock values (?,?,?)",
            [(sku, loc, qty) for sku, qtys in STOCK.items()
             for (loc, _), qty in zip(LOCATIONS, qtys, strict=True)])
        self._db.executemany("insert into movements values (?,?,?,?,?,?,?)", _movements())
        self._db.commit()

    def query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        """Rows of a read-only query as dicts."""
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, params).fetchall()]

    # -- lookups -----------------------------------------------------------------
    def items(self) -> list[dict]:
        """Every item with its supplier name."""
        return self.query(
            "select i.*, s.name as supplier from items i join suppliers s on s.id = i.supplier_id "
            "order by i.sku")

    def suppliers(self) -> list[dict]:
        return self.query("select * from suppliers order by id")

    _STOCK_SQL = (
        "select i.sku, i.name as item, i.unit, i.reorder_level, i.unit_cost, "
        "s.name as supplier, "
        "sum(case when st.location='NORTH' then st.qty else 0 end) as north, "
        "sum(case when st.location='SOUTH' then st.qty else 0 end) as south, "
        "sum(st.qty) as on_hand "
        "from items i join suppliers s on s.id = i.supplier_id "
        "join stock st on st.sku = i.sku ")

    def stock(self, skus: list[str] | None = None) -> list[dict]:
        """On-hand stock per item (total and per location), in the order of ``skus``."""
        rows = self.query(self._STOCK_SQL + "group by i.sku order by i.sku")
        if skus is None:
            return rows
        by_sku = {r["sku"]: r for r in rows}
        return [by_sku[s] for s in skus if s in by_sku]

    def low_stock(self) -> list[dict]:
        """Items whose total on hand is below their reorder level, biggest shortfall first."""
        return self.query(
            self._STOCK_SQL + "group by i.sku having sum(st.qty) < i.reorder_level "
            "order by (i.reorder_level - sum(st.qty)) desc, i.sku")

    def stock_at(self, location: str) -> list[dict]:
        return self.query(
            "select i.sku, i.name as item, st.qty as on_hand, i.unit from stock st "
            "join items i on i.sku = st.sku where st.location = ? order by i.sku", (location,))

    def suppliers_of(self, skus: list[str]) -> list[dict]:
        """Suppliers of the given items, each with the names of those items it supplies."""
        if not skus:
            return []
        marks = ",".join("?" * len(skus))
        rows = self.query(
            "select s.id as supplier_id, s.name as supplier, s.city, s.lead_time_days, "
            f"i.name as item from items i join suppliers s on s.id = i.supplier_id "
            f"where i.sku in ({marks}) order by s.id, i.sku", tuple(skus))
        out: dict[str, dict] = {}
        for r in rows:
            entry = out.setdefault(r["supplier_id"], {
                "supplier": r["supplier"], "supplier_id": r["supplier_id"], "city": r["city"],
                "lead_time_days": r["lead_time_days"], "items": []})
            entry["items"].append(r["item"])
        return list(out.values())

    def items_of_suppliers(self, supplier_ids: list[str]) -> list[str]:
        if not supplier_ids:
            return []
        marks = ",".join("?" * len(supplier_ids))
        return [r["sku"] for r in self.query(
            f"select sku from items where supplier_id in ({marks}) order by sku",
            tuple(supplier_ids))]

    def movements(self, skus: list[str] | None, days: int) -> list[dict]:
        """Receipts and shipments in the ``days`` days up to the data date, newest first."""
        since = (dt.date.fromisoformat(self.data_as_of) - dt.timedelta(days=days - 1)).isoformat()
        sql = ("select m.date, i.name as item, m.sku, m.location, m.kind, m.qty, m.ref "
               "from movements m join items i on i.sku = m.sku where m.date >= ? ")
        params: tuple = (since,)
        if skus is not None:
            if not skus:
                return []
            sql += f"and m.sku in ({','.join('?' * len(skus))}) "
            params += tuple(skus)
        return self.query(sql + "order by m.date desc, m.id desc", params)
