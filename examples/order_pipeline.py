"""An order pipeline: validate, then charge and ship as child tasks.

The steps share data through run data with tags, and ``charge-payment`` fails on its first
attempt (a simulated gateway timeout) and succeeds on its retry::

    validate-order ──▶ put "order" [validated], "customer-<id>" [customer, v1.0]
        ├─ spawn charge-payment ──▶ get "order", fails once, then put "payment" [charged]
        └─ spawn ship-order (async) ──▶ get "order", put "shipment" [shipped]

Run it with ``foreman-worker --app examples.order_pipeline`` and start an order with
:func:`start_order`, or run ``python examples/demo.py`` for everything at once.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field

from foreman_api.schemas import Run, Task
from foreman_worker import Backoff, Fail, ForemanClient, TaskContext, submit, task


class OrderLine(BaseModel):
    sku: str
    quantity: int = Field(gt=0)
    unit_price_cents: int = Field(ge=0)


class Order(BaseModel):
    order_id: str
    customer_id: str
    email: str
    lines: list[OrderLine] = Field(min_length=1)

    @property
    def total_cents(self) -> int:
        return sum(line.quantity * line.unit_price_cents for line in self.lines)


class GatewayTimeout(Exception):
    """The (simulated) payment gateway did not answer in time."""


@task("validate-order", max_retries=2)
def validate_order(ctx: TaskContext, order: Order) -> dict[str, object]:
    """Check the order, share it with the later steps, and fan out to charge and ship."""
    if order.total_cents == 0:
        raise Fail("an order must cost something")
    ctx.put("order", order.model_dump() | {"totalCents": order.total_cents}, tags=["validated"])
    ctx.put(
        f"customer-{order.customer_id}",
        {"customerId": order.customer_id, "email": order.email},
        tags=["customer", "v1.0"],
    )
    charge = ctx.spawn("charge-payment", {"orderId": order.order_id})
    ship = ctx.spawn("ship-order", {"orderId": order.order_id})
    ctx.logger.info("order %s valid: %d cents", order.order_id, order.total_cents)
    return {"valid": True, "totalCents": order.total_cents,
            "children": [str(charge.id), str(ship.id)]}


@task("charge-payment", max_retries=3, backoff=Backoff(initial=0.5, maximum=2.0))
def charge_payment(ctx: TaskContext) -> dict[str, object]:
    """Charge the card; the first attempt times out, to show a retry."""
    order = ctx.get("order")
    if not isinstance(order, dict):
        raise Fail("no validated order in this run")
    if ctx.attempt == 1:
        raise GatewayTimeout("payment gateway did not answer (simulated; the retry succeeds)")
    payment = {"orderId": order["order_id"], "amountCents": order["totalCents"],
               "attempt": ctx.attempt}
    ctx.put("payment", payment, tags=["charged"])
    return payment


@task("ship-order", timeout=30)
async def ship_order(ctx: TaskContext) -> dict[str, object]:
    """Book a shipment (an async handler)."""
    order = ctx.get("order")
    if not isinstance(order, dict):
        raise Fail("no validated order in this run")
    await asyncio.sleep(0.05)  # stands in for a call to a carrier's API
    shipment = {"orderId": order["order_id"], "carrier": "parcel-co",
                "items": sum(line["quantity"] for line in order["lines"])}
    ctx.put("shipment", shipment, tags=["shipped"])
    return shipment


def start_order(client: ForemanClient, order: Order) -> tuple[Run, Task]:
    """Create a run for ``order`` and submit its first task."""
    run = client.create_run(order.model_dump(), metadata={"pipeline": "orders"}).unwrap()
    first = submit(run.id, "validate-order", order.model_dump(), client=client)
    return run, first
