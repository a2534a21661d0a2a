"""The SDK service tests/fuzz/test_fuzz_service_api.py fuzzes: typed endpoints of every shape the SDK serves.

Path and query parameters with bounds, JSON bodies with nested models,
enums, optional and list fields, a response model per endpoint, sync and
async handlers. It keeps a little state (items by id), so a PUT and a GET
see each other, as a real service's would.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import HTTPException, Query
from pydantic import BaseModel, Field

from lichen import Service, endpoint


class Address(BaseModel):
    city: str = Field(min_length=1, max_length=40)
    postcode: str = Field(pattern=r"^[0-9]{4,6}$")


class Order(BaseModel):
    item: str = Field(min_length=1, max_length=40)
    quantity: int = Field(ge=1, le=1000)
    unit_price: float = Field(gt=0, le=1e6)
    tags: list[str] = Field(default_factory=list, max_length=5)
    priority: Literal["low", "normal", "high"] = "normal"
    note: str | None = None
    ship_to: Address | None = None


class Receipt(BaseModel):
    item: str
    quantity: int
    total: float
    priority: str
    tags: list[str]


class Item(BaseModel):
    id: int
    name: str
    price: float
    labels: dict[str, str] = Field(default_factory=dict)


class ItemUpdate(BaseModel):
    name: str = Field(min_length=1, max_length=80)
    price: float = Field(ge=0, le=1e9)
    labels: dict[str, str] = Field(default_factory=dict, max_length=8)


class Page(BaseModel):
    items: list[Item]
    page: int
    total: int


class FuzzTarget(Service):
    """Orders and items: the typed endpoints schemathesis fuzzes."""

    def setup(self) -> None:
        self.items: dict[int, Item] = {i: Item(id=i, name=f"item-{i}", price=float(i)) for i in range(1, 6)}

    @endpoint("/v1/orders", method="POST", timeout_s=5)
    def order(self, req: Order) -> Receipt:
        return Receipt(item=req.item, quantity=req.quantity, total=round(req.quantity * req.unit_price, 2),
                       priority=req.priority, tags=req.tags)

    @endpoint("/v1/items/{item_id}", method="GET", timeout_s=5)
    async def get_item(self, item_id: int, detail: bool = False) -> Item:
        item = self.items.get(item_id)
        if item is None:
            raise HTTPException(404, f"no item {item_id}")
        return item if detail else Item(id=item.id, name=item.name, price=item.price)

    @endpoint("/v1/items/{item_id}", method="PUT", timeout_s=5)
    def put_item(self, item_id: Annotated[int, Field(ge=1, le=10_000)], req: ItemUpdate) -> Item:
        if len(self.items) >= 1000 and item_id not in self.items:
            raise HTTPException(409, "the store is full")
        self.items[item_id] = Item(id=item_id, name=req.name, price=req.price, labels=req.labels)
        return self.items[item_id]

    @endpoint("/v1/items", method="GET", timeout_s=5)
    async def list_items(self, page: Annotated[int, Query(ge=1, le=100)] = 1,
                         size: Annotated[int, Query(ge=1, le=50)] = 10, prefix: str = "") -> Page:
        matching = [item for _, item in sorted(self.items.items()) if item.name.startswith(prefix)]
        start = (page - 1) * size
        return Page(items=matching[start:start + size], page=page, total=len(matching))
